//! The driver's calls to the Kubernetes API, all made on one thread of their own that owns a
//! single-threaded tokio runtime: the engine is synchronous, its calls are few (create,
//! list, delete), and a kube-rs client must be driven by the runtime it was made on.

use crate::k8s_err;
use adparallelengine_core::Result;
use crossbeam_channel::{bounded, unbounded, Sender};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

type Call = Box<dyn FnOnce(&tokio::runtime::Runtime, &kube::Client) + Send>;

/// A single-threaded tokio runtime (for tests and tools that call kube-rs directly).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| k8s_err(format!("cannot start the Kubernetes client's runtime: {e}")))
}

/// The client configuration of the kubeconfig at `path` (its current context), or, without
/// a path, kube-rs's inference: `KUBECONFIG`, `~/.kube/config`, then the pod's service
/// account when running in a cluster.
pub async fn config(path: Option<&Path>) -> Result<kube::Config> {
    match path {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| k8s_err(format!("cannot read the kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| k8s_err(format!("bad kubeconfig {}: {e}", path.display())))
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| k8s_err(format!("no Kubernetes cluster configured (set KUBECONFIG, or run in a pod): {e}"))),
    }
}

/// A client for the cluster of the kubeconfig at `path`, its current context (plain HTTP
/// for a local API, rustls for real clusters).
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client> {
    client(config(Some(path)).await?)
}

fn client(config: kube::Config) -> Result<kube::Client> {
    kube::Client::try_from(config).map_err(|e| k8s_err(format!("cannot make a Kubernetes client: {e}")))
}

/// The thread that makes the driver's API calls.
pub(crate) struct Api {
    calls: Sender<Call>,
    /// The configuration, for a fresh client where the thread cannot serve (Ctrl-C).
    pub(crate) config: kube::Config,
}

/// The longest the driver waits for one API call.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Api {
    /// Starts the thread, with a client for `kubeconfig` (or the inferred configuration).
    pub(crate) fn start(kubeconfig: Option<&Path>) -> Result<Api> {
        let rt = runtime()?;
        let config = rt.block_on(config(kubeconfig))?;
        let client = {
            let _guard = rt.enter();
            client(config.clone())?
        };
        let (calls, rx) = unbounded::<Call>();
        std::thread::Builder::new()
            .name("adparallelengine-k8s-api".into())
            .spawn(move || {
                for call in rx {
                    call(&rt, &client);
                }
            })
            .map_err(|e| k8s_err(format!("cannot start the Kubernetes API thread: {e}")))?;
        Ok(Api { calls, config })
    }

    /// Runs `f` on the API thread and waits for its result (at most [`CALL_TIMEOUT`]).
    pub(crate) fn call<R, F>(&self, what: &str, f: impl FnOnce(kube::Client) -> F + Send + 'static) -> Result<R>
    where
        R: Send + 'static,
        F: Future<Output = std::result::Result<R, kube::Error>>,
    {
        let (reply, answer) = bounded(1);
        let call: Call = Box::new(move |rt, client| {
            let fut: Pin<Box<dyn Future<Output = _>>> = Box::pin(f(client.clone()));
            let _ = reply.send(rt.block_on(async { tokio::time::timeout(CALL_TIMEOUT, fut).await }));
        });
        self.calls.send(call).map_err(|_| k8s_err(format!("cannot {what}: the API thread is gone")))?;
        match answer.recv_timeout(CALL_TIMEOUT + Duration::from_secs(5)) {
            Ok(Ok(Ok(r))) => Ok(r),
            Ok(Ok(Err(e))) => Err(k8s_err(format!("cannot {what}: {}", describe(&e)))),
            Ok(Err(_)) | Err(_) => Err(k8s_err(format!("cannot {what}: no answer from the API in {CALL_TIMEOUT:?}"))),
        }
    }

    /// Runs `f` on the API thread without waiting for it.
    pub(crate) fn spawn<F>(&self, f: impl FnOnce(kube::Client) -> F + Send + 'static)
    where
        F: Future<Output = ()>,
    {
        let call: Call = Box::new(move |rt, client| {
            rt.block_on(async {
                let _ = tokio::time::timeout(CALL_TIMEOUT, f(client.clone())).await;
            })
        });
        let _ = self.calls.send(call);
    }
}

/// An API error in words: the server's message and code when it sent one.
pub(crate) fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}
