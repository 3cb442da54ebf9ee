import os

from hypothesis import HealthCheck, settings

# "ci" keeps the whole suite within a few minutes on two cores; "thorough"
# is for a developer's long run: HYPOTHESIS_PROFILE=thorough pytest
settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
