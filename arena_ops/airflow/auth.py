"""The Airflow UI's own authentication for the Arena app: the JWT the UI holds (its ``_token`` cookie, or an
``Authorization: Bearer`` header for API clients), resolved by Airflow's auth manager. No token → 401, a bad or
expired one → 401/403; the user must also be allowed custom views (with the simple auth manager: any viewer)."""

from __future__ import annotations

from typing import Annotated

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, HTTPException, status

RESOURCE = "Arena"


def airflow_user(user: Annotated[BaseUser, Depends(get_user)]) -> BaseUser:
    if not get_auth_manager().is_authorized_custom_view(method="GET", resource_name=RESOURCE, user=user):
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=f"not allowed to view {RESOURCE}")
    return user
