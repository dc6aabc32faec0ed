//! `GET /v1/models` and `GET /v1/models/{id}`: the served chat model and,
//! when one is loaded, the embedding model.

use axum::Json;
use axum::extract::{Path, State};

use crate::AppState;
use crate::error::ApiError;
use crate::openai::{ModelList, ModelObject};

fn served(state: &AppState) -> Vec<ModelObject> {
    let mut ids = vec![state.model_id().to_owned()];
    ids.extend(state.embedder().map(|e| e.model_id().to_owned()));
    ids.into_iter()
        .map(|id| ModelObject {
            id,
            object: "model",
            created: state.created(),
            owned_by: "hearth",
        })
        .collect()
}

/// `GET /v1/models`.
pub async fn list(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: served(&state),
    })
}

/// `GET /v1/models/{id}`.
pub async fn retrieve(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    served(&state)
        .into_iter()
        .find(|model| model.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::model_not_found(&id, state.model_id()))
}
