"""What an agent profile may set, checked before a run begins. `overnight.iterate.apply_profile` lays the profile
over the run's options in one place (a field the profile sets wins over the run's flag, one it leaves out keeps
the flag's value); what a trial needs of it at run time (its prompt text and tools) `Run.begin_trial` reads from
`RunConfig.profile`."""

from __future__ import annotations

from tbench.agents.model_adapter import agent_tools, parse_model
from tbench.errors import UserError
from tbench.models.model_settings import ModelConfig
from tbench.models.profile import AgentProfile

#: Profile fields that are sampler settings of chat-API agents (`ChatOptions`).
SAMPLER_FIELDS = ("temperature", "top_p", "num_predict")
#: Profile fields that are the run's lesson policy (`LearningConfig`).
LESSON_FIELDS = ("memory", "top_k", "token_budget")


def check_profile_tools(profile: AgentProfile, model: str, *, validation: bool = False) -> None:
    """Every tool the profile names must be one of the agent's (and, with `--claude-validation-rate`, of
    Claude Code's too: both agents run under the one profile)."""
    if profile.tools is None:
        return
    configs = [parse_model(model)]
    if validation:
        configs.append(ModelConfig(type="claude-code"))
    for config in configs:
        own = agent_tools(config)
        unknown = [t for t in profile.tools if t not in own]
        if unknown:
            allowed = ", ".join(sorted(own)) if own else "none (it calls no tools)"
            raise UserError(
                f"{profile.id}: tool(s) {', '.join(repr(t) for t in unknown)} are not tools of the {config.type} "
                f"agent; its tools are {allowed}",
                field="profile",
            )
