//! An authenticated IKE SA ([`EstablishedSa`]) and the tombstone of one
//! that failed or was deleted ([`Closing`]).
//!
//! This slice answers the peer's requests minimally (RFC 7296 §1.4, §1.5):
//! an INFORMATIONAL request is answered — empty for liveness checks and
//! notifications, with our Delete for a deleted CHILD SA, and a Delete of
//! the IKE SA (or AUTHENTICATION_FAILED) closes it with its CHILD SA; a
//! CREATE_CHILD_SA request is answered NO_ADDITIONAL_SAS (rekeying comes
//! later). A retransmitted request (the previous message ID) gets the
//! cached response, byte for byte, without being processed again.

use crate::crypto::{IkeSaKeys, IvCounter, Role};
use crate::wire::{
    Chain, ChildSpi, DeleteRepr, ExchangeType, Message, NotifyRepr, NotifyType, PayloadRepr,
    ProtocolId,
};

use super::action::{Action, ChildSaDelete, Closed, Event, IkeSaId, NatStatus, Path, Timestamp};
use super::engine::{Ctx, Outcome, State};
use super::failure::Dropped;
use super::msg::{self, Collected};

/// The SPIs of an installed CHILD SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChildPair {
    pub(crate) inbound: ChildSpi,
    pub(crate) outbound: ChildSpi,
}

/// An authenticated IKE SA.
pub(crate) struct EstablishedSa {
    id: IkeSaId,
    role: Role,
    path: Path,
    keys: IkeSaKeys,
    iv: IvCounter,
    nat: NatStatus,
    /// The message ID of the peer's next request.
    peer_next: u32,
    /// Our response to the peer's last request.
    last_response: Option<(u32, Vec<u8>)>,
    child: Option<ChildPair>,
}

impl EstablishedSa {
    pub(crate) fn new(
        id: IkeSaId,
        role: Role,
        path: Path,
        keys: IkeSaKeys,
        iv: IvCounter,
        nat: NatStatus,
        child: Option<ChildPair>,
    ) -> Self {
        EstablishedSa {
            id,
            role,
            path,
            keys,
            iv,
            nat,
            // The responder has answered the initiator's 0 and 1; the
            // initiator has had no request from the responder yet.
            peer_next: match role {
                Role::Initiator => 0,
                Role::Responder => 2,
            },
            last_response: None,
            child,
        }
    }

    /// Records our response to the peer's request `message_id`.
    pub(crate) fn answered(&mut self, message_id: u32, bytes: Vec<u8>) {
        self.last_response = Some((message_id, bytes));
        self.peer_next = message_id.wrapping_add(1);
    }

    pub(crate) fn has_child(&self) -> bool {
        self.child.is_some()
    }

    fn keep(self: Box<Self>) -> Outcome {
        Outcome::Keep(State::Established(self))
    }

    pub(crate) fn on_message(
        mut self: Box<Self>,
        ctx: &mut Ctx<'_>,
        m: &Message<&[u8]>,
        path: Path,
    ) -> Outcome {
        let h = m.header();
        let unexpected = |why| Dropped::Unexpected {
            exchange: h.exchange(),
            message_id: h.message_id(),
            why,
        };
        if h.flags().response {
            ctx.dropped(
                path.remote,
                unexpected("a response, but no request is outstanding"),
            );
            return self.keep();
        }
        if let Some((id, bytes)) = &self.last_response {
            if *id == h.message_id() {
                ctx.send(path, bytes.clone());
                return self.keep();
            }
        }
        if h.message_id() != self.peer_next {
            ctx.dropped(path.remote, unexpected("message ID outside the window"));
            return self.keep();
        }
        let (pt, first) = match msg::open(&self.keys, self.role, m) {
            Ok(o) => o,
            Err(reason) => {
                ctx.dropped(path.remote, reason);
                return self.keep();
            }
        };
        let c = match Chain::new_checked_inner(first, &pt) {
            Ok(chain) => Collected::new(chain.payloads()),
            Err(error) => {
                ctx.dropped(
                    path.remote,
                    Dropped::MalformedContent {
                        exchange: h.exchange(),
                        error,
                    },
                );
                return self.keep();
            }
        };
        if self.nat.any() {
            // Behind a NAT the peer's port may change (RFC 7296 §2.23).
            self.path = path;
        }
        let message_id = h.message_id();
        let mut close = None;
        let answer: Vec<PayloadRepr> = match (h.exchange(), c) {
            (_, Err(_)) => vec![PayloadRepr::Notify(NotifyRepr::new(
                NotifyType::INVALID_SYNTAX,
                vec![],
            ))],
            (ExchangeType::INFORMATIONAL, Ok(c)) => {
                if c.deletes.iter().any(|d| d.protocol_id() == ProtocolId::IKE) {
                    close = Some(Closed::DeletedByPeer);
                    vec![]
                } else if c.notify(NotifyType::AUTHENTICATION_FAILED).is_some() {
                    close = Some(Closed::PeerRefusedOurAuthentication);
                    vec![]
                } else {
                    self.deletes_child(ctx, &c)
                }
            }
            (ExchangeType::CREATE_CHILD_SA, Ok(_)) => vec![PayloadRepr::Notify(NotifyRepr::new(
                NotifyType::NO_ADDITIONAL_SAS,
                vec![],
            ))],
            (_, Ok(_)) => {
                ctx.dropped(
                    path.remote,
                    unexpected("not an exchange of an established IKE SA"),
                );
                return self.keep();
            }
        };
        let response = match msg::sealed(
            &self.keys,
            self.role,
            &mut self.iv,
            msg::header(self.id, h.exchange(), self.role, true, message_id),
            answer,
        ) {
            Ok(r) => r,
            Err(f) => {
                ctx.failed(self.id, self.role, f);
                return self.keep();
            }
        };
        ctx.send(path, response.clone());
        if let Some(reason) = close {
            if let Some(child) = self.child.take() {
                ctx.push(Action::DeleteChildSa(ChildSaDelete {
                    ike_sa: self.id,
                    inbound_spi: child.inbound,
                    outbound_spi: child.outbound,
                }));
            }
            ctx.event(Event::Closed {
                ike_sa: self.id,
                role: self.role,
                reason,
            });
            return Outcome::Keep(State::Closing(Closing::new(
                Some((message_id, response)),
                ctx.now.saturating_add(ctx.config.half_open_timeout),
            )));
        }
        self.answered(message_id, response);
        self.keep()
    }

    /// Delete payloads for ESP SAs: if one names our CHILD SA's outbound
    /// SPI, remove it and answer with our inbound SPI (RFC 7296 §1.4.1).
    fn deletes_child(&mut self, ctx: &mut Ctx<'_>, c: &Collected<'_>) -> Vec<PayloadRepr> {
        let Some(child) = self.child else {
            return vec![];
        };
        let named = c
            .deletes
            .iter()
            .filter(|d| d.protocol_id() == ProtocolId::ESP)
            .any(|d| d.spis().any(|s| s == child.outbound));
        if !named {
            return vec![];
        }
        self.child = None;
        ctx.push(Action::DeleteChildSa(ChildSaDelete {
            ike_sa: self.id,
            inbound_spi: child.inbound,
            outbound_spi: child.outbound,
        }));
        vec![PayloadRepr::Delete(DeleteRepr::Esp(vec![child.inbound]))]
    }
}

/// A failed or deleted IKE SA, kept until `until` to answer a retransmitted
/// request with the same response.
pub(crate) struct Closing {
    last_response: Option<(u32, Vec<u8>)>,
    until: Timestamp,
}

impl Closing {
    pub(crate) fn new(last_response: Option<(u32, Vec<u8>)>, until: Timestamp) -> Self {
        Closing {
            last_response,
            until,
        }
    }

    pub(crate) fn deadline(&self) -> Timestamp {
        self.until
    }

    pub(crate) fn on_message(self, ctx: &mut Ctx<'_>, m: &Message<&[u8]>, path: Path) -> Outcome {
        let h = m.header();
        match &self.last_response {
            Some((id, bytes)) if !h.flags().response && *id == h.message_id() => {
                ctx.send(path, bytes.clone());
            }
            _ => ctx.dropped(
                path.remote,
                Dropped::Unexpected {
                    exchange: h.exchange(),
                    message_id: h.message_id(),
                    why: "the IKE SA is closed",
                },
            ),
        }
        Outcome::Keep(State::Closing(self))
    }
}
