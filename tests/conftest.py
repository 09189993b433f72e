"""Shared test configuration: Hypothesis without wall-clock deadlines (CI machines are shared and
slow; timing is measured by bench/, never asserted in tests)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("flowtime", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("flowtime")
