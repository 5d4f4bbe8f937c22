//! `flagd.sync.v1.FlagSyncService`: in-process flagd providers take their flags from here.
//! `GetMetadata` and each response's `sync_context` say where the flags come from (flag set,
//! selector, revision). `SyncFlags` sends the configuration (see [`super::configuration`]) at
//! once, then again whenever a change to a picked feature arrives or a scheduled change takes
//! effect. Like a watch, the stream ends with `UNAVAILABLE` when the node loses contact with
//! the cluster or shuts down, so a provider reconnects (to another node, behind a balancer)
//! rather than serving a stale copy.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::limits::WatchPermit;
use crate::clock::now_ms;
use crate::flagd::configuration::Selector;
use crate::flagd::source::{Changes, FlagSource};
use crate::pb::flagd::sync as pb;
use crate::pb::flagd::sync::flag_sync_service_server::FlagSyncService;

/// Messages buffered per sync stream (each is a whole configuration).
const STREAM_BUFFER: usize = 2;
/// How long a configuration may wait for a provider that does not read before the stream ends.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an idle stream checks that its source can still vouch for its copy.
const CONTACT_CHECK: Duration = Duration::from_secs(1);

/// The sync service of one node (or agent).
pub struct FlagSync {
    source: Arc<dyn FlagSource>,
}

impl FlagSync {
    /// The service serving `source`'s flags.
    pub(crate) fn new(source: Arc<dyn FlagSource>) -> Self {
        FlagSync { source }
    }
}

/// The selector of a request: the `Flagd-Selector` header, else the field.
pub fn selector<T>(request: &Request<T>, field: &str) -> Result<Selector, Status> {
    let text = match request.metadata().get("flagd-selector") {
        Some(v) => v
            .to_str()
            .map_err(|_| Status::invalid_argument("the Flagd-Selector header is not text"))?
            .to_string(),
        None => field.to_string(),
    };
    Ok(Selector::parse(&text)?)
}

/// Where a provider's flags came from, as flagd tells it in `GetMetadata` and a sync
/// response's `sync_context`: the flag set the selector names (`flagSetId`), the selector, and
/// the cluster revision the configuration was built at. (Providers add these to their
/// evaluation contexts.)
fn sync_context(selector: &Selector, revision: u64) -> prost_types::Struct {
    let mut m = serde_json::Map::new();
    if let Some(id) = selector.flag_set_id() {
        m.insert("flagSetId".into(), id.into());
    }
    m.insert("selector".into(), selector.text().into());
    m.insert("revision".into(), revision.into());
    crate::pb::structs::from_json(&m)
}

/// Sends the configuration whenever it changes, until the provider leaves or the node can no
/// longer vouch for its copy.
async fn follow(
    source: Arc<dyn FlagSource>,
    selector: Selector,
    tx: mpsc::Sender<Result<pb::SyncFlagsResponse, Status>>,
    mut changes: Box<dyn Changes>,
) {
    let mut last = String::new();
    loop {
        let now = now_ms();
        if let Err(e) = source.can_serve() {
            let _ = tx.try_send(Err(e.into()));
            return;
        }
        let config = source.configuration(&selector, now);
        let document = config.document();
        if document != last {
            let msg = pb::SyncFlagsResponse {
                flag_configuration: document.clone(),
                sync_context: Some(sync_context(&selector, source.revision())),
            };
            match tokio::time::timeout(SEND_TIMEOUT, tx.send(Ok(msg))).await {
                Ok(Ok(())) => last = document,
                // The provider left, or does not read.
                _ => return,
            }
        }
        let until_change = config
            .next_change_ms
            .map(|at| Duration::from_millis((at - now).max(0) as u64 + 1));
        let wait = until_change.map_or(CONTACT_CHECK, |d| d.min(CONTACT_CHECK));
        tokio::select! {
            change = changes.next() => if let Err(status) = change {
                let _ = tx.try_send(Err(status));
                return;
            },
            _ = tokio::time::sleep(wait) => {}
            _ = tx.closed() => return,
        }
    }
}

type SyncStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::SyncFlagsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl FlagSyncService for FlagSync {
    type SyncFlagsStream = SyncStream;

    async fn sync_flags(
        &self,
        request: Request<pb::SyncFlagsRequest>,
    ) -> Result<Response<Self::SyncFlagsStream>, Status> {
        let selector = selector(&request, &request.get_ref().selector)?;
        let permit = request.extensions().get::<WatchPermit>().cloned();
        let changes = self.source.open().await?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let source = self.source.clone();
        tokio::spawn(async move {
            // Counted against the caller's open watches until the stream ends.
            let _permit = permit;
            follow(source, selector, tx, changes).await
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch_all_flags(
        &self,
        request: Request<pb::FetchAllFlagsRequest>,
    ) -> Result<Response<pb::FetchAllFlagsResponse>, Status> {
        let selector = selector(&request, &request.get_ref().selector)?;
        self.source.can_serve()?;
        self.source.barrier().await?;
        let config = self.source.configuration(&selector, now_ms());
        Ok(Response::new(pb::FetchAllFlagsResponse {
            flag_configuration: config.document(),
        }))
    }

    async fn get_metadata(
        &self,
        request: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        let selector = selector(&request, "")?;
        let revision = self.source.revision();
        Ok(Response::new(pb::GetMetadataResponse {
            metadata: Some(sync_context(&selector, revision)),
        }))
    }
}
