//! The rtnetlink connection and the link queries the other modules share.
//!
//! A netlink socket belongs to the network namespace of the thread that
//! opened it, for its whole life: [`Netlink::connect`] therefore acts on
//! the namespace of the calling thread, which is what lets tests run
//! everything inside a namespace of their own.

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};

use crate::NetError;
use crate::error::errno;

/// An open rtnetlink connection. Cheap to clone; the connection task runs
/// on the tokio runtime it was opened on.
#[derive(Debug, Clone)]
pub struct Netlink {
    pub(crate) handle: Handle,
}

/// What banger needs to know about one link.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<InfoKind>,
    pub controller: Option<u32>,
    /// The link-layer address.
    pub mac: Option<Vec<u8>>,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Self {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            kind: None,
            controller: None,
            mac: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Controller(c) => link.controller = Some(*c),
                LinkAttribute::Address(a) => link.mac = Some(a.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            link.kind = Some(k.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }

    /// The link's kind as `ip -d link` would print it.
    pub fn kind_name(&self) -> String {
        match &self.kind {
            None => "a device without a kind (physical or loopback)".to_string(),
            Some(k) => format!("a {} device", k.to_string().to_lowercase()),
        }
    }
}

impl Netlink {
    /// Open a connection in the calling thread's network namespace. Must be
    /// called from inside a tokio runtime.
    pub fn connect() -> Result<Self, NetError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetError::Connect)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The link called `name`, if there is one.
    pub(crate) async fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetError> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(Some(Link::from_message(&m))),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(NetError::netlink("look up link", name, e)),
        }
    }

    /// Every link of the namespace.
    pub(crate) async fn links(&self) -> Result<Vec<Link>, NetError> {
        let mut s = self.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(|e| NetError::netlink("list links", "(all)", e))?
        {
            out.push(Link::from_message(&m));
        }
        Ok(out)
    }

    /// Set the link administratively up, optionally enslaving it to a bridge.
    pub(crate) async fn set_up(
        &self,
        link: &Link,
        controller: Option<u32>,
    ) -> Result<(), NetError> {
        let mut msg = LinkUnspec::new_with_index(link.index).up();
        if let Some(c) = controller {
            msg = msg.controller(c);
        }
        self.handle
            .link()
            .set(msg.build())
            .execute()
            .await
            .map_err(|e| NetError::netlink("set up", &link.name, e))
    }

    /// Delete a link; a link already gone is not an error.
    pub(crate) async fn delete(&self, link: &Link) -> Result<(), NetError> {
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(NetError::netlink("delete link", &link.name, e)),
        }
    }
}
