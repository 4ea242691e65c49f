"""Options of a Google Classroom connection (``options:`` in the connections file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field, model_validator

from lms_pipeline.providers.options import REPO_ROOT, CommonOptions


class ClassroomOptions(CommonOptions):
    """Google Classroom (§5): token pages (the API truncates pages to 30 whatever is asked); no SIS id field."""

    page_size: int = Field(30, ge=1, le=100, description="pageSize asked; Classroom answers at most 30")
    identity: Literal["provider", "email"] = Field(
        "provider",
        description="student ids: provider = classroom-user:<userId>; email = the directory's student_id for the "
        "profile email (unmatched users keep their provider id and are counted)",
    )
    student_directory: str | None = Field(None, description="CSV with email,student_id (identity: email)")

    @model_validator(mode="after")
    def _directory_for_email(self) -> ClassroomOptions:
        if self.identity == "email" and not self.student_directory:
            raise ValueError("identity 'email' needs student_directory (a CSV with email,student_id)")
        return self

    def directory_path(self) -> Path | None:
        if self.student_directory is None:
            return None
        raw = Path(self.student_directory)
        return raw if raw.is_absolute() else REPO_ROOT / raw

    def identity_args(self) -> dict:
        """How the normalizers identify students: Classroom has no SIS id field, so ids are its own, or the
        directory's id for the profile email."""
        if self.identity == "provider":
            return {"identity": "provider"}
        directory = pd.read_csv(self.directory_path(), dtype=str, comment="#")
        return {"identity": "email", "directory": directory[["email", "student_id"]]}
