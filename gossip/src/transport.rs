//! A chitchat transport that hands over a UDP socket we bound ourselves.
//!
//! Owns only the hand-over. Chitchat needs our advertised address (in its `ChitchatId`) before
//! it opens its socket, but with `listen` on port 0 the port is only known after binding; so we
//! bind first, with chitchat's own UDP socket type, and give it that socket. Datagram decoding
//! stays chitchat's.

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use chitchat::transport::{Socket, Transport, UdpSocket};

use crate::error::GossipError;

pub(crate) struct PreBoundUdp {
    socket: Mutex<Option<Box<dyn Socket>>>,
}

impl PreBoundUdp {
    /// Binds `listen` and returns the transport with the address actually bound.
    pub(crate) async fn bind(listen: SocketAddr) -> Result<(PreBoundUdp, SocketAddr), GossipError> {
        let bind_err = |source: anyhow::Error| GossipError::Bind { addr: listen, source: source.into() };
        let socket = UdpSocket::open(listen).await.map_err(bind_err)?;
        let bound = socket.local_addr().map_err(bind_err)?;
        Ok((PreBoundUdp { socket: Mutex::new(Some(Box::new(socket))) }, bound))
    }
}

#[async_trait]
impl Transport for PreBoundUdp {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        // A poisoned lock only means another opener panicked; the Option is still coherent.
        let socket = self.socket.lock().unwrap_or_else(PoisonError::into_inner).take();
        socket.ok_or_else(|| anyhow::anyhow!("gossip socket for {listen_addr} was already handed over"))
    }
}
