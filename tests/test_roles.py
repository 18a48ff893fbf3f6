"""Tests of mlops_kit.roles as a user calls it: the catalogue, the RACI matrix, owners, skills and team_for."""
from types import SimpleNamespace as NS

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from mlops_kit.roles import (LIFECYCLE_STEPS, PHASES, PIPELINES, ROLES, SKILLS, LifecycleStep, Role, owners,
                             plot_skills_profile, raci_matrix, roles_table, skills_profile, team_for)

ROLE_KEYS = ["data_scientist", "data_engineer", "ml_engineer", "mlops_engineer",
             "business_stakeholder", "subject_matter_expert", "software_engineer", "backend_engineer"]
STEP_KEYS = ["problem_framing", "data_sourcing", "ingest", "validate", "wrangle", "label", "split",
             "features", "train", "evaluate", "model_testing", "package",
             "serve", "inference_logging", "monitor", "retrain", "ci_cd"]


def test_role_catalogue_is_complete():
    assert list(ROLES) == ROLE_KEYS
    for key, role in ROLES.items():
        assert isinstance(role, Role) and role.key == key and role.name
        assert role.focus.strip(), key
        assert role.key_areas and all(area and text for area, text in role.key_areas.items()), key
        assert role.tools, key
        assert role.phases and set(role.phases) <= set(PHASES), key


def test_phases_and_lifecycle_steps():
    assert list(PHASES) == ["design", "development", "deployment"]
    assert list(LIFECYCLE_STEPS) == STEP_KEYS
    for key, step in LIFECYCLE_STEPS.items():
        assert isinstance(step, LifecycleStep) and step.key == key
        assert step.phase in PHASES and step.pipeline in PIPELINES and step.description
    assert [s.pipeline for s in LIFECYCLE_STEPS.values()] == \
        ["design"] * 2 + ["data_engineering"] * 5 + ["model_engineering"] * 5 + ["model_deployment"] * 5


def test_raci_has_one_accountable_and_a_responsible_per_step():
    m = raci_matrix()
    assert list(m.index) == STEP_KEYS and list(m.columns) == ROLE_KEYS
    assert set(m.to_numpy().ravel()) <= {"R", "A", "C", "I", ""}
    assert ((m == "A").sum(axis=1) == 1).all()
    assert ((m == "R").sum(axis=1) >= 1).all()


def test_role_phases_agree_with_raci():
    m = raci_matrix()
    for key, role in ROLES.items():
        involved = {LIFECYCLE_STEPS[s].phase for s in STEP_KEYS if m.loc[s, key] in ("A", "R", "C")}
        assert set(role.phases) == involved, key


def test_owners():
    for step in STEP_KEYS:
        o = owners(step)
        assert set(o) == {"accountable", "responsible", "consulted", "informed"}
        assert o["accountable"] in ROLES and o["responsible"]
        assert o["accountable"] not in o["responsible"] + o["consulted"] + o["informed"]
    assert owners("problem_framing")["accountable"] == "business_stakeholder"


@pytest.mark.parametrize("bad", ["monitoring", "", "Train"])
def test_owners_unknown_step_names_valid_keys(bad):
    with pytest.raises(KeyError, match="valid keys are: problem_framing"):
        owners(bad)
    with pytest.raises(ValueError):
        owners(bad)


def test_roles_table():
    t = roles_table()
    assert list(t.index) == ROLE_KEYS
    assert {"name", "focus", "key_areas", "tools", "phases"} <= set(t.columns)
    assert not (t == "").any().any()


def test_skills_profile_has_no_zero():
    sp = skills_profile()
    assert list(sp.index) == ROLE_KEYS and list(sp.columns) == SKILLS
    assert len(SKILLS) >= 5
    assert ((sp >= 1) & (sp <= 5)).all().all()


def test_plot_skills_profile():
    fig = plot_skills_profile()
    assert len(fig.axes) == len(ROLE_KEYS) and fig.legends
    fig2 = plot_skills_profile(["data_scientist", "ml_engineer"])
    assert len(fig2.axes) == 1 and fig2.axes[0].name == "polar" and fig2.axes[0].get_legend() is not None
    plt.close("all")
    with pytest.raises(KeyError, match="valid keys are"):
        plot_skills_profile(["wizard"])


def _spec(mode="batch", latency=None, consumers="monthly CSV for the retention team"):
    return NS(
        name="churn",
        value_proposition=NS(sentence=lambda: "For retention managers who lose customers, our churn scorer is a "
                                              "prediction service that flags at-risk customers early."),
        stakeholders=[NS(name="Head of retention", role="business_stakeholder", interest="fewer cancellations")],
        data_sources=[NS(name="customers", kind="csv", owner="CRM team", legal_basis="contract", personal_data=True),
                      NS(name="usage", kind="parquet", owner="platform", legal_basis="legitimate interest", personal_data=False)],
        prediction=NS(task="binary", target="churned", label_rule={"inactive_days": 60}),
        metrics=NS(offline_metric="roc_auc", threshold=0.75),
        serving=NS(mode=mode, latency_budget_ms=latency, consumers=consumers),
        retraining=NS(cadence="monthly", triggers=["drift"]))


def test_team_for_batch_spec():
    team = team_for(_spec())
    assert list(team.columns) == ["role", "name", "reason"]
    assert list(team.role) == ["data_scientist", "data_engineer", "ml_engineer", "mlops_engineer",
                               "business_stakeholder", "subject_matter_expert"]
    reason = dict(zip(team.role, team.reason))
    assert "For retention managers who lose customers" in reason["business_stakeholder"]
    assert "churned" in reason["data_scientist"] and "roc_auc" in reason["data_scientist"]
    assert "2 data sources" in reason["data_engineer"]


def test_team_for_online_spec_adds_backend_and_software():
    batch = set(team_for(_spec()).role)
    online = team_for(_spec(mode="online", latency=120, consumers="risk badge in the support web app"))
    assert set(online.role) - batch == {"backend_engineer", "software_engineer"}
    assert "120 ms" in dict(zip(online.role, online.reason))["backend_engineer"]


def test_team_for_bad_spec():
    with pytest.raises(ValueError, match="'batch' or 'online'"):
        team_for(_spec(mode="realtime"))
    spec = _spec()
    del spec.metrics
    with pytest.raises(TypeError, match="spec.metrics.offline_metric"):
        team_for(spec)
