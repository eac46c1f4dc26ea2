//! Building and reading the messages of the exchanges: headers, plain and
//! encrypted messages, and the payloads of a message gathered by type.

use crate::crypto::{self, IkeSaKeys, IvCounter, Plaintext, Role, ICV_LEN, IV_LEN};
use crate::wire::{
    AuthPayload, DeletePayload, ExchangeType, Flags, HeaderRepr, IdPayload, KePayload, Message,
    MessageRepr, NoncePayload, NotifyPayload, NotifyType, Payload, PayloadRepr, PayloadType,
    SaPayload, SkRepr, TsPayload,
};

use super::action::IkeSaId;
use super::failure::{Dropped, Failure};

/// The header of a message of the IKE SA `id`, sent by the side playing
/// `role` (the original initiator sets the I flag in all its messages).
pub(crate) fn header(
    id: IkeSaId,
    exchange: ExchangeType,
    role: Role,
    response: bool,
    message_id: u32,
) -> HeaderRepr {
    HeaderRepr {
        spi_i: id.initiator,
        spi_r: id.responder,
        exchange,
        flags: Flags {
            initiator: role == Role::Initiator,
            higher_version: false,
            response,
        },
        message_id,
    }
}

/// An unencrypted message.
pub(crate) fn plain(header: HeaderRepr, payloads: Vec<PayloadRepr>) -> Result<Vec<u8>, Failure> {
    MessageRepr { header, payloads }
        .to_vec()
        .map_err(|e| Failure::internal("encoding a message", e))
}

/// A message whose payloads are all inside an SK payload, sealed with our
/// key (SK_ei or SK_er) and the next IV of its counter.
pub(crate) fn sealed(
    keys: &IkeSaKeys,
    local: Role,
    iv: &mut IvCounter,
    header: HeaderRepr,
    inner: Vec<PayloadRepr>,
) -> Result<Vec<u8>, Failure> {
    let chain = crate::wire::ChainRepr { payloads: inner };
    let plaintext = chain
        .to_vec()
        .map_err(|e| Failure::internal("encoding encrypted payloads", e))?;
    let body_len = IV_LEN
        .saturating_add(plaintext.len())
        .saturating_add(1)
        .saturating_add(ICV_LEN);
    // The message with a zeroed body gives the header and SK header with
    // their final lengths: the associated data.
    let framed = plain(
        header,
        vec![PayloadRepr::Sk(SkRepr {
            first_inner: chain.first_payload(),
            body: vec![0; body_len],
        })],
    )?;
    let prefix = framed
        .get(..framed.len().saturating_sub(body_len))
        .ok_or_else(|| Failure::internal("sealing", "message shorter than its body"))?;
    let mut out = vec![0u8; framed.len()];
    let iv = iv.next_iv().map_err(|e| Failure::internal("sealing", e))?;
    let n = crypto::seal(keys.sealing_key(local), prefix, iv, &plaintext, &mut out)
        .map_err(|e| Failure::internal("sealing", e))?;
    out.truncate(n);
    Ok(out)
}

/// The decrypted content of a message's SK payload and its first payload
/// type. Fragments (SKF) are not supported yet.
pub(crate) fn open(
    keys: &IkeSaKeys,
    local: Role,
    msg: &Message<&[u8]>,
) -> Result<(Plaintext, PayloadType), Dropped> {
    let exchange = msg.header().exchange();
    let Some(enc) = msg.encrypted() else {
        return Err(Dropped::Unexpected {
            exchange,
            message_id: msg.header().message_id(),
            why: "no encrypted payload",
        });
    };
    if enc.fragment().is_some() {
        return Err(Dropped::Fragmented);
    }
    let pt = crypto::open(
        keys.opening_key(local),
        msg.as_bytes(),
        enc.payload_offset(),
    )
    .map_err(|_| Dropped::DecryptionFailed { exchange })?;
    Ok((pt, enc.first_inner()))
}

/// The payloads of one message (or its encrypted content), by type.
#[derive(Debug, Default)]
pub(crate) struct Collected<'a> {
    pub sa: Option<SaPayload<'a>>,
    pub ke: Option<KePayload<'a>>,
    pub nonce: Option<NoncePayload<'a>>,
    pub id_i: Option<IdPayload<'a>>,
    pub id_r: Option<IdPayload<'a>>,
    pub auth: Option<AuthPayload<'a>>,
    pub ts_i: Option<TsPayload<'a>>,
    pub ts_r: Option<TsPayload<'a>>,
    pub notifies: Vec<NotifyPayload<'a>>,
    pub deletes: Vec<DeletePayload<'a>>,
    /// An EAP or CP payload: things this engine does not do.
    pub unsupported: Option<PayloadType>,
}

fn once<T>(slot: &mut Option<T>, v: T) -> Result<(), &'static str> {
    if slot.is_some() {
        return Err("a payload that may appear once appears twice");
    }
    *slot = Some(v);
    Ok(())
}

impl<'a> Collected<'a> {
    /// Gathers the payloads; SA, KE, Nonce, ID, AUTH and TS at most once.
    pub(crate) fn new(payloads: impl Iterator<Item = Payload<'a>>) -> Result<Self, &'static str> {
        let mut c = Collected::default();
        for p in payloads {
            match p {
                Payload::Sa(v) => once(&mut c.sa, v)?,
                Payload::Ke(v) => once(&mut c.ke, v)?,
                Payload::Nonce(v) => once(&mut c.nonce, v)?,
                Payload::IdI(v) => once(&mut c.id_i, v)?,
                Payload::IdR(v) => once(&mut c.id_r, v)?,
                Payload::Auth(v) => once(&mut c.auth, v)?,
                Payload::TsI(v) => once(&mut c.ts_i, v)?,
                Payload::TsR(v) => once(&mut c.ts_r, v)?,
                Payload::Notify(v) => c.notifies.push(v),
                Payload::Delete(v) => c.deletes.push(v),
                Payload::Eap(_) | Payload::Cp(_) => {
                    c.unsupported.get_or_insert(p.payload_type());
                }
                // Vendor IDs, certificates and requests for them are not used.
                _ => {}
            }
        }
        Ok(c)
    }

    /// The first notification of this type.
    pub(crate) fn notify(&self, ty: NotifyType) -> Option<&NotifyPayload<'a>> {
        self.notifies.iter().find(|n| n.notify_type() == ty)
    }

    /// The first error notification, if any.
    pub(crate) fn error(&self) -> Option<NotifyType> {
        self.notifies
            .iter()
            .map(NotifyPayload::notify_type)
            .find(|t| t.is_error())
    }
}
