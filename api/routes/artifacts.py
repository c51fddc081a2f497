"""/v1/artifacts/{id}: an artifact's record and its bytes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response

from api.dependencies import Context, ReadSession
from api.schemas import ArtifactOut, ErrorBody
from api.security import CurrentPrincipal
from gni_service.artifacts import get_artifact
from gni_service.auth import check_artifact_owner
from gni_service.storage import StorageError

router = APIRouter(tags=["artifacts"])
NOT_FOUND: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorBody, "description": "No such artifact."}
}


@router.get(
    "/artifacts/{artifact_id}", response_model=ArtifactOut, responses=NOT_FOUND, summary="One artifact"
)
def get_artifact_route(artifact_id: str, session: ReadSession, principal: CurrentPrincipal) -> ArtifactOut:
    check_artifact_owner(session, artifact_id, principal)
    return ArtifactOut.of(get_artifact(session, artifact_id))


@router.get(
    "/artifacts/{artifact_id}/content",
    response_class=Response,
    responses={
        200: {
            "description": "The file, with its content type (image/png, application/json, …).",
            "content": {
                "application/octet-stream": {},
                "image/png": {},
                "application/json": {},
                "text/csv": {},
            },
        },
        307: {"description": "Redirect to the object store (a short-lived presigned URL)."},
        **NOT_FOUND,
    },
    summary="Download an artifact",
)
def download_artifact_route(
    artifact_id: str, session: ReadSession, context: Context, principal: CurrentPrincipal
) -> Response:
    check_artifact_owner(session, artifact_id, principal)
    artifact = get_artifact(session, artifact_id)
    filename = artifact.name.rsplit("/", 1)[-1]
    download = context.store.download(artifact.key, filename=filename, content_type=artifact.content_type)
    if download.url is not None:
        return RedirectResponse(download.url, status_code=307)
    if download.path is None:
        raise StorageError(f"the store gave no location for artifact {artifact_id}")
    return FileResponse(
        download.path,
        media_type=artifact.content_type,
        filename=filename,
        headers={"ETag": f'"{artifact.sha256}"', "X-Content-SHA256": artifact.sha256},
    )
