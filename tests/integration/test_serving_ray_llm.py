"""The serving tests of ``test_serving.py`` on the other backend, ``serving.backend: ray-serve-llm`` (``ray.serve.llm``
apps behind the same router, over HTTP). Runs after ``test_serving.py`` has taken the shared deployment down: both
check that no Ray process is left, so they cannot overlap."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration import test_serving as shared
from tests.integration.conftest import Serving, serve_up

# In test_serving.py's order (pytest runs a module's tests in the order its namespace lists them).
test_status_lists_running_applications = shared.test_status_lists_running_applications
test_two_models_routed_by_id = shared.test_two_models_routed_by_id
test_unknown_model_is_a_clear_404 = shared.test_unknown_model_is_a_clear_404
test_structured_output_choice_and_regex = shared.test_structured_output_choice_and_regex
test_update_target_restarts_only_the_target = shared.test_update_target_restarts_only_the_target
test_up_again_changes_nothing = shared.test_up_again_changes_nothing
test_zz_down_leaves_no_ray_processes = shared.test_zz_down_leaves_no_ray_processes

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    yield from serve_up(tmp_path_factory, "ray-serve-llm")
