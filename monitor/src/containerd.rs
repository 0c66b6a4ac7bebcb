//! containerd's container → image mapping, kept warm for `ociguard create`.
//!
//! `ociguard` is a new process on every call: on its own it must connect to containerd's socket
//! and ask for the container and then the image before it can even look in its label cache
//! (~0.8 ms here). ociguardd holds one connection instead, follows containerd's event stream
//! (`/containers/*`, `/images/*`) into two maps — (namespace, container) → image name and
//! (namespace, image name) → manifest digest — and answers `image_of` from them. A container
//! the stream has not shown yet (its create event may still be in flight) or an image not asked
//! about before is looked up over the warm connection and remembered. Each container's answer
//! is also published as a file ([`crate::imagemap`]) as soon as its create event is applied, so
//! that `ociguard create` usually needs no round trip at all.
//!
//! The maps only ever hold what containerd said: an image update or delete drops its digest
//! (the name may now point elsewhere) and any answer asked for before it is not remembered, a
//! container delete drops the container, and a lost connection clears both (events may have
//! been missed). containerd sends the event stream's headers with its first event, so the maps
//! are used only from that first event on; until then every lookup is asked. And a container
//! is answered from the maps only once its own create event has been applied: events arrive in
//! the order containerd published them, so a retag of its image before it was created has been
//! applied as well, and the digest cannot be the old one.
//!
//! Known limit: a container id that is deleted and created again (with another image) while
//! the monitor has processed neither event is answered with the old container's image. Engines
//! under Kubernetes never reuse ids; with `ctr`, it needs the monitor to lag behind a delete and
//! a re-create, which take containerd round trips of their own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{
    GetContainerRequest, GetImageRequest, ListImagesRequest, SubscribeRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::Request;
use containerd_client::types::Envelope;
use prost::Message;

use crate::imagemap::Publisher;
pub use crate::protocol::ImageRef;
use tokio::sync::mpsc;

/// How long to wait before reconnecting to containerd.
const RETRY: Duration = Duration::from_secs(2);
/// Bounds on what is remembered (a node has far fewer containers and image names).
const MAX_CONTAINERS: usize = 100_000;
const MAX_IMAGES: usize = 20_000;

type Key = (String, String);

#[derive(Debug, Default)]
struct Maps {
    /// Whether the event stream is up (the maps are only trusted while it is).
    following: bool,
    containers: HashMap<Key, String>,
    images: HashMap<Key, String>,
    /// Counts image events: an answer asked before one is not remembered.
    generation: u64,
}

impl Maps {
    fn clear(&mut self) {
        self.following = false;
        self.generation += 1;
        self.containers.clear();
        self.images.clear();
    }

    /// Only a container whose create event has been seen is answered: containerd publishes
    /// events in order, so every image event before it (a retag of its image name) has been
    /// applied too, and the digest remembered for the name is the one it was created from.
    fn lookup(&self, namespace: &str, id: Option<&str>, image: Option<&str>) -> Option<ImageRef> {
        if !self.following {
            return None;
        }
        let name = self
            .containers
            .get(&(namespace.to_owned(), id?.to_owned()))?
            .clone();
        if image.is_some_and(|hint| hint != name) {
            return None;
        }
        let target = self.images.get(&(namespace.to_owned(), name.clone()))?;
        Some(ImageRef {
            name,
            target: target.clone(),
        })
    }

    /// Apply one event of the stream; what it means for the published files.
    fn apply(&mut self, env: &Envelope) -> Effect {
        let Some(any) = env.event.as_ref() else {
            return Effect::None;
        };
        let ns = env.namespace.clone();
        let value = any.value.as_slice();
        use containerd_client::events as ev;
        match env.topic.as_str() {
            "/containers/create" => {
                if let Ok(e) = ev::ContainerCreate::decode(value) {
                    return self.put_container(ns, e.id, e.image);
                }
            }
            "/containers/update" => {
                if let Ok(e) = ev::ContainerUpdate::decode(value) {
                    return self.put_container(ns, e.id, e.image);
                }
            }
            "/containers/delete" => {
                if let Ok(e) = ev::ContainerDelete::decode(value) {
                    self.containers.remove(&(ns.clone(), e.id.clone()));
                    return Effect::Unpublish { ns, id: e.id };
                }
            }
            // The name may now point at another digest (or nothing): ask again when needed.
            "/images/update" => {
                self.generation += 1;
                if let Ok(e) = containerd_client::services::v1::ImageUpdate::decode(value) {
                    self.images.remove(&(ns, e.name));
                }
            }
            "/images/delete" => {
                self.generation += 1;
                if let Ok(e) = containerd_client::services::v1::ImageDelete::decode(value) {
                    self.images.remove(&(ns, e.name));
                }
            }
            "/images/create" => self.generation += 1,
            _ => {}
        }
        Effect::None
    }

    fn put_container(&mut self, ns: String, id: String, image: String) -> Effect {
        if image.is_empty() || self.containers.len() >= MAX_CONTAINERS {
            self.containers.remove(&(ns.clone(), id.clone()));
            return Effect::Unpublish { ns, id };
        }
        self.containers
            .insert((ns.clone(), id.clone()), image.clone());
        match self.images.get(&(ns.clone(), image.clone())) {
            Some(target) => Effect::Publish {
                ns,
                id,
                image: ImageRef {
                    name: image,
                    target: target.clone(),
                },
            },
            None => Effect::Resolve {
                ns,
                id,
                name: image,
            },
        }
    }

    /// Remember what containerd answered for `name`, unless an image event came since the
    /// question (`asked` is the generation then); whether it was remembered.
    fn answered(&mut self, ns: &str, name: &str, target: &str, asked: u64) -> bool {
        if self.generation != asked || !self.following {
            return false;
        }
        self.put_image(ns, name, target);
        true
    }

    fn put_image(&mut self, ns: &str, name: &str, target: &str) {
        if self.following && self.images.len() < MAX_IMAGES {
            self.images
                .insert((ns.to_owned(), name.to_owned()), target.to_owned());
        }
    }
}

/// What an event means for the published files ([`crate::imagemap`]).
#[derive(Debug, PartialEq, Eq)]
enum Effect {
    None,
    Publish {
        ns: String,
        id: String,
        image: ImageRef,
    },
    Unpublish {
        ns: String,
        id: String,
    },
    /// The image's digest is not known yet: ask containerd, then publish.
    Resolve {
        ns: String,
        id: String,
        name: String,
    },
}

/// A lookup the maps could not answer, for the connection's thread.
#[derive(Debug)]
struct Ask {
    namespace: String,
    id: Option<String>,
    image: Option<String>,
    reply: std::sync::mpsc::SyncSender<Result<ImageRef, String>>,
}

/// The running follower (see the module documentation).
#[derive(Debug, Clone)]
pub struct Containerd {
    maps: Arc<RwLock<Maps>>,
    ask: mpsc::UnboundedSender<Ask>,
    /// A connection to containerd is open (otherwise lookups fail at once).
    connected: Arc<AtomicBool>,
}

impl Containerd {
    /// Start following containerd at `socket` on a thread of its own. It keeps retrying while
    /// the socket is absent or containerd restarts.
    ///
    /// The async runtime is built only once the socket exists: a node without containerd
    /// carries one sleeping thread that checks for it every few seconds.
    /// With `publish_dir`, answers are also published there as files ([`crate::imagemap`]).
    pub fn start(socket: PathBuf, publish_dir: Option<PathBuf>) -> std::io::Result<Containerd> {
        let maps = Arc::new(RwLock::new(Maps::default()));
        let connected = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::unbounded_channel();
        let (m, c) = (Arc::clone(&maps), Arc::clone(&connected));
        std::thread::Builder::new()
            .name("ociguardd-containerd".into())
            .spawn(move || {
                let mut said = false;
                while !socket.exists() {
                    if !std::mem::replace(&mut said, true) {
                        log::info!(
                            "containerd {}: socket absent; waiting for it",
                            socket.display()
                        );
                    }
                    std::thread::sleep(RETRY);
                }
                match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt.block_on(follow(socket, publish_dir, m, c, rx)),
                    Err(e) => log::error!("containerd follower: async runtime: {e}"),
                }
            })?;
        Ok(Containerd {
            maps,
            ask: tx,
            connected,
        })
    }

    /// The image of container `id` (or the image named `image`) in `namespace`: from the maps,
    /// else asked over the warm connection within `timeout`.
    pub fn image_of(
        &self,
        namespace: &str,
        id: Option<&str>,
        image: Option<&str>,
        timeout: Duration,
    ) -> Result<ImageRef, String> {
        let known = read(&self.maps).lookup(namespace, id, image);
        if let Some(found) = known {
            return Ok(found);
        }
        if !self.connected.load(Ordering::Acquire) {
            return Err("not connected to containerd".to_owned());
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.ask
            .send(Ask {
                namespace: namespace.to_owned(),
                id: id.map(str::to_owned),
                image: image.map(str::to_owned),
                reply,
            })
            .map_err(|_| "the containerd follower has stopped".to_owned())?;
        answer
            .recv_timeout(timeout)
            .map_err(|_| format!("no answer from containerd within {timeout:?}"))?
    }
}

fn lock(maps: &RwLock<Maps>) -> std::sync::RwLockWriteGuard<'_, Maps> {
    match maps.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn read(maps: &RwLock<Maps>) -> std::sync::RwLockReadGuard<'_, Maps> {
    match maps.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

async fn follow(
    socket: PathBuf,
    publish_dir: Option<PathBuf>,
    maps: Arc<RwLock<Maps>>,
    connected: Arc<AtomicBool>,
    mut rx: mpsc::UnboundedReceiver<Ask>,
) {
    let mut logged = false;
    let mut publishing = Publishing {
        dir: publish_dir,
        sessions: 0,
    };
    loop {
        let r = connect_and_follow(&socket, &maps, &connected, &mut publishing, &mut rx).await;
        connected.store(false, Ordering::Release);
        match r {
            Ok(()) => return, // every sender is gone: the monitor is stopping
            Err(e) => {
                lock(&maps).clear();
                if !logged {
                    log::warn!(
                        "containerd {}: {e}; retrying every {RETRY:?}",
                        socket.display()
                    );
                    logged = true;
                }
            }
        }
        // Meanwhile, lookups are answered "unavailable" at once (ociguard asks containerd itself).
        let sleep = tokio::time::sleep(RETRY);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                ask = rx.recv() => match ask {
                    Some(a) => {
                        let _ = a.reply.send(Err(format!("containerd {} not connected", socket.display())));
                    }
                    None => return,
                },
            }
        }
    }
}

/// Where the follower publishes, and how many sessions it has had (each has its own nonce).
#[derive(Debug)]
struct Publishing {
    dir: Option<PathBuf>,
    sessions: u64,
}

async fn connect_and_follow(
    socket: &std::path::Path,
    maps: &Arc<RwLock<Maps>>,
    connected: &AtomicBool,
    publishing: &mut Publishing,
    rx: &mut mpsc::UnboundedReceiver<Ask>,
) -> Result<(), String> {
    if !socket.exists() {
        return Err("socket absent".to_owned());
    }
    let channel = containerd_client::connect(socket)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    connected.store(true, Ordering::Release);
    // containerd sends the stream's headers with its first event: until one comes, the
    // subscription is not known to be in place and the maps are not trusted (lookups are asked).
    let mut events = EventsClient::new(channel.clone());
    let subscribe = events.subscribe(SubscribeRequest {
        filters: vec![
            r#"topic~="^/containers/""#.to_owned(),
            r#"topic~="^/images/""#.to_owned(),
        ],
    });
    tokio::pin!(subscribe);
    let mut stream = None;
    let mut publisher: Option<Arc<Publisher>> = None;
    let result = loop {
        tokio::select! {
            sub = &mut subscribe, if stream.is_none() => {
                match sub {
                    Ok(s) => stream = Some(s.into_inner()),
                    Err(s) => break Err(format!("subscribe to events: {}", s.message())),
                }
                lock(maps).following = true;
                log::info!("following containerd {}", socket.display());
                if let Some(dir) = &publishing.dir {
                    publishing.sessions += 1;
                    match Publisher::begin(dir, publishing.sessions) {
                        Ok(p) => publisher = Some(Arc::new(p)),
                        Err(e) => log::warn!("containerd image map not published in {}: {e}", dir.display()),
                    }
                }
            }
            msg = next_event(&mut stream) => match msg {
                Ok(Some(env)) => {
                    let effect = lock(maps).apply(&env);
                    publish(effect, publisher.as_ref(), &channel, maps);
                }
                Ok(None) => break Err("event stream ended".to_owned()),
                Err(s) => break Err(format!("event stream: {}", s.message())),
            },
            ask = rx.recv() => match ask {
                Some(a) => {
                    let channel = channel.clone();
                    let maps = Arc::clone(maps);
                    let publisher = publisher.clone();
                    let generation = read(&maps).generation;
                    tokio::spawn(async move {
                        let r = ask_containerd(channel, &a).await;
                        if let Ok(found) = &r {
                            let mut m = lock(&maps);
                            // An image event since the question may have made the answer stale.
                            let seen = a.id.as_ref().is_some_and(|id| {
                                m.containers.get(&(a.namespace.clone(), id.clone())) == Some(&found.name)
                            });
                            if m.answered(&a.namespace, &found.name, &found.target, generation) && seen {
                                drop(m);
                                if let (Some(p), Some(id)) = (&publisher, &a.id) {
                                    put(p, &a.namespace, id, found);
                                }
                            }
                        }
                        let _ = a.reply.send(r);
                    });
                }
                None => break Ok(()),
            },
        }
    };
    if let Some(p) = publisher {
        p.end();
    }
    result
}

fn put(p: &Publisher, ns: &str, id: &str, image: &ImageRef) {
    if let Err(e) = p.put(ns, id, image) {
        log::warn!("publish the image of container {ns}/{id}: {e}");
    }
}

/// Carry out what an event means for the published files: write, remove, or ask containerd
/// for the digest first.
fn publish(
    effect: Effect,
    publisher: Option<&Arc<Publisher>>,
    channel: &Channel,
    maps: &Arc<RwLock<Maps>>,
) {
    let Some(p) = publisher else {
        return;
    };
    match effect {
        Effect::None => {}
        Effect::Publish { ns, id, image } => put(p, &ns, &id, &image),
        Effect::Unpublish { ns, id } => p.remove(&ns, &id),
        Effect::Resolve { ns, id, name } => {
            let (p, channel, maps) = (Arc::clone(p), channel.clone(), Arc::clone(maps));
            let asked = read(&maps).generation;
            tokio::spawn(async move {
                let Ok(found) = image_ref(channel, &ns, None, Some(&name)).await else {
                    return; // ociguard will ask itself
                };
                let mut m = lock(&maps);
                let still = m.containers.get(&(ns.clone(), id.clone())) == Some(&name);
                if m.answered(&ns, &name, &found.target, asked) && still {
                    drop(m);
                    put(&p, &ns, &id, &found);
                }
            });
        }
    }
}

/// The next event, once the stream exists (pending until then).
async fn next_event(
    stream: &mut Option<containerd_client::tonic::Streaming<Envelope>>,
) -> Result<Option<Envelope>, containerd_client::tonic::Status> {
    match stream {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

/// A containerd API request in `namespace`.
pub fn namespaced<T>(msg: T, namespace: &str) -> Result<Request<T>, String> {
    let mut req = Request::new(msg);
    let ns = namespace
        .parse()
        .map_err(|_| format!("namespace {namespace:?} is not a valid header value"))?;
    req.metadata_mut().insert("containerd-namespace", ns);
    Ok(req)
}

async fn ask_containerd(channel: Channel, a: &Ask) -> Result<ImageRef, String> {
    image_ref(channel, &a.namespace, a.id.as_deref(), a.image.as_deref()).await
}

/// Ask containerd for the image of container `id` (or the image named `image`): its name and
/// manifest digest (two round trips, one when the name is given).
pub async fn image_ref(
    channel: Channel,
    ns: &str,
    id: Option<&str>,
    image: Option<&str>,
) -> Result<ImageRef, String> {
    let name = match (image, id) {
        (Some(n), _) => n.to_owned(),
        (None, Some(id)) => ContainersClient::new(channel.clone())
            .get(namespaced(GetContainerRequest { id: id.to_owned() }, ns)?)
            .await
            .map_err(|s| format!("container {ns}/{id}: {}", s.message()))?
            .into_inner()
            .container
            .map(|c| c.image)
            .filter(|i| !i.is_empty())
            .ok_or_else(|| format!("container {ns}/{id} has no image"))?,
        (None, None) => return Err("neither a container nor an image was named".to_owned()),
    };
    let target = ImagesClient::new(channel)
        .get(namespaced(GetImageRequest { name: name.clone() }, ns)?)
        .await
        .map_err(|s| format!("image {name}: {}", s.message()))?
        .into_inner()
        .image
        .and_then(|i| i.target)
        .map(|t| t.digest)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| format!("image {name} has no target"))?;
    Ok(ImageRef { name, target })
}

/// The other names of the image whose manifest is `target` in namespace `ns` (one round trip):
/// the tags of an image a container was created by digest (`name@sha256:...`). Sorted, tags
/// before other digest references, at most `max`.
pub async fn image_aliases(
    channel: Channel,
    ns: &str,
    target: &str,
    max: usize,
) -> Result<Vec<String>, String> {
    let filter = format!("target.digest=={target}");
    let mut names: Vec<String> = ImagesClient::new(channel)
        .list(namespaced(
            ListImagesRequest {
                filters: vec![filter],
            },
            ns,
        )?)
        .await
        .map_err(|s| format!("images of {target}: {}", s.message()))?
        .into_inner()
        .images
        .into_iter()
        .filter(|i| i.target.as_ref().is_some_and(|t| t.digest == target))
        .map(|i| i.name)
        .collect();
    names.sort_by(|a, b| (a.contains('@'), a).cmp(&(b.contains('@'), b)));
    names.truncate(max);
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_client::events as ev;
    use prost_types::Any;

    fn envelope<M: Message>(ns: &str, topic: &str, m: &M) -> Envelope {
        Envelope {
            timestamp: None,
            namespace: ns.to_owned(),
            topic: topic.to_owned(),
            event: Some(Any {
                type_url: String::new(),
                value: m.encode_to_vec(),
            }),
        }
    }

    #[test]
    fn the_maps_follow_the_events() {
        let mut m = Maps {
            following: true,
            ..Default::default()
        };
        m.apply(&envelope(
            "k8s.io",
            "/containers/create",
            &ev::ContainerCreate {
                id: "c1".into(),
                image: "docker.io/x:1".into(),
                runtime: None,
            },
        ));
        // the container is known, its image not yet
        assert_eq!(m.lookup("k8s.io", Some("c1"), None), None);
        m.put_image("k8s.io", "docker.io/x:1", "sha256:aa");
        let want = ImageRef {
            name: "docker.io/x:1".into(),
            target: "sha256:aa".into(),
        };
        assert_eq!(m.lookup("k8s.io", Some("c1"), None), Some(want.clone()));
        assert_eq!(
            m.lookup("k8s.io", Some("c1"), Some("docker.io/x:1")),
            Some(want)
        );
        // a name alone, or a container not seen created, or another name: asked, not answered
        assert_eq!(m.lookup("k8s.io", None, Some("docker.io/x:1")), None);
        assert_eq!(m.lookup("k8s.io", Some("c2"), Some("docker.io/x:1")), None);
        assert_eq!(m.lookup("k8s.io", Some("c1"), Some("docker.io/z:1")), None);
        // namespaces are separate
        assert_eq!(m.lookup("default", Some("c1"), None), None);
        // a retag drops the digest; a delete drops the container
        m.apply(&envelope(
            "k8s.io",
            "/images/update",
            &containerd_client::services::v1::ImageUpdate {
                name: "docker.io/x:1".into(),
                ..Default::default()
            },
        ));
        assert_eq!(m.lookup("k8s.io", Some("c1"), None), None);
        m.put_image("k8s.io", "docker.io/x:1", "sha256:bb");
        assert_eq!(
            m.lookup("k8s.io", Some("c1"), None).map(|r| r.target),
            Some("sha256:bb".into())
        );
        m.apply(&envelope(
            "k8s.io",
            "/containers/delete",
            &ev::ContainerDelete { id: "c1".into() },
        ));
        assert_eq!(m.lookup("k8s.io", Some("c1"), None), None);
        // garbage in an event is ignored
        m.apply(&Envelope {
            timestamp: None,
            namespace: "k8s.io".into(),
            topic: "/containers/create".into(),
            event: Some(Any {
                type_url: String::new(),
                value: vec![0xff, 0xff, 0xff],
            }),
        });
        assert!(m.containers.is_empty());
        // without the stream nothing is trusted
        m.put_image("k8s.io", "docker.io/y:1", "sha256:cc");
        m.clear();
        assert!(m.images.is_empty() && m.containers.is_empty());
        m.put_image("k8s.io", "docker.io/y:1", "sha256:cc");
        assert!(m.images.is_empty(), "not remembered while not following");
    }

    #[test]
    fn absent_socket_answers_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let c = Containerd::start(dir.path().join("nope.sock"), None).unwrap();
        let t = std::time::Instant::now();
        let err = c
            .image_of("default", Some("x"), None, Duration::from_secs(5))
            .unwrap_err();
        assert!(err.contains("not connected"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
