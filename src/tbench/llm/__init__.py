"""Model-server clients. `chat.py` holds the transport-neutral types the tool-calling loop speaks; one module
per server protocol (`ollama.py`; an OpenAI-compatible one can sit beside it) turns them into requests."""
