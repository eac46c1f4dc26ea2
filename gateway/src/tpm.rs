//! TPM 2.0: hand-marshalled `TPM2_PCR_Read` and `TPM2_PCR_Extend` (SHA-256 bank only),
//! the NV commands the key-use ledger needs (`TPM2_NV_ReadPublic`, `TPM2_NV_DefineSpace`,
//! `TPM2_NV_Read`, `TPM2_NV_Write`; password session, empty authorisation), response
//! parsers, and a transport over any byte stream (`/dev/tpmrm0`, a TCP or Unix socket
//! to swtpm in tests).
//!
//! Wire format (TPM 2.0 Library, Part 3 §22.4 PCR_Read and §22.2 PCR_Extend; all
//! integers big-endian):
//! - command header: `tag u16 | commandSize u32 | commandCode u32`;
//! - response header: `tag u16 | responseSize u32 | responseCode u32`;
//! - `TPML_PCR_SELECTION`: `count u32`, then per bank `hash u16 | sizeofSelect u8 | bitmap`
//!   (bit `n % 8` of byte `n / 8` selects PCR `n`);
//! - `TPML_DIGEST`: `count u32`, then `TPM2B_DIGEST` (`size u16 | bytes`) in ascending
//!   PCR order of the returned selection.
//!
//! Invariants: the parser checks every length against the buffer, checks that
//! `responseSize` equals the bytes received and that no bytes are left over; it
//! accepts only PCRs that were asked for and a digest count equal to the selected bits.
//! Nothing in this module panics on any response.

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use std::io::{Read, Write};

/// `TPM_ST_NO_SESSIONS`.
pub const TPM_ST_NO_SESSIONS: u16 = 0x8001;
/// `TPM_ST_SESSIONS`.
pub const TPM_ST_SESSIONS: u16 = 0x8002;
/// `TPM_CC_PCR_Read`.
pub const TPM_CC_PCR_READ: u32 = 0x0000_017E;
/// `TPM_CC_PCR_Extend`.
pub const TPM_CC_PCR_EXTEND: u32 = 0x0000_0182;
/// `TPM_CC_NV_DefineSpace`.
pub const TPM_CC_NV_DEFINE_SPACE: u32 = 0x0000_012A;
/// `TPM_CC_NV_Write`.
pub const TPM_CC_NV_WRITE: u32 = 0x0000_0137;
/// `TPM_CC_NV_Read`.
pub const TPM_CC_NV_READ: u32 = 0x0000_014E;
/// `TPM_CC_NV_Increment`.
pub const TPM_CC_NV_INCREMENT: u32 = 0x0000_0134;
/// `TPM_CC_NV_WriteLock`.
pub const TPM_CC_NV_WRITE_LOCK: u32 = 0x0000_0138;
/// `TPMA_NV` type field `TPM_NT_COUNTER` (bits 7:4 = 1): a monotonic counter.
pub const TPMA_NV_COUNTER: u32 = 1 << 4;
/// `TPMA_NV_WRITEDEFINE`: `NV_WriteLock` locks writes until the index is undefined.
pub const TPMA_NV_WRITEDEFINE: u32 = 1 << 13;
/// `TPMA_NV_WRITELOCKED` (set by the TPM).
pub const TPMA_NV_WRITELOCKED: u32 = 1 << 11;
/// `TPM_CC_NV_ReadPublic`.
pub const TPM_CC_NV_READ_PUBLIC: u32 = 0x0000_0169;
/// `TPM_RH_OWNER`: the owner hierarchy (authorises `NV_DefineSpace`).
pub const TPM_RH_OWNER: u32 = 0x4000_0001;
/// `TPMA_NV_AUTHWRITE`: written with the index's own authorisation.
pub const TPMA_NV_AUTHWRITE: u32 = 1 << 2;
/// `TPMA_NV_AUTHREAD`: read with the index's own authorisation.
pub const TPMA_NV_AUTHREAD: u32 = 1 << 18;
/// `TPMA_NV_NO_DA`: no dictionary-attack lockout (the authorisation is empty).
pub const TPMA_NV_NO_DA: u32 = 1 << 25;
/// `TPMA_NV_WRITTEN`: set by the TPM once the index has been written.
pub const TPMA_NV_WRITTEN: u32 = 1 << 29;
/// Largest NV read or write we issue in one command (PC-client TPMs accept at least
/// this much: `MAX_NV_BUFFER_SIZE` ≥ 512).
pub const NV_CHUNK: usize = 512;
/// `TPM_ALG_SHA256`.
pub const TPM_ALG_SHA256: u16 = 0x000B;
/// `TPM_RS_PW`: the password authorisation session.
pub const TPM_RS_PW: u32 = 0x4000_0009;
/// Largest response we accept (TPM2 `MAX_RESPONSE_SIZE` in every PC-client TPM).
pub const MAX_RESPONSE: usize = 4096;
/// Number of PCRs in a PC-client TPM.
pub const NUM_PCRS: u8 = 24;
/// Bytes of PCR bitmap we send (`PCR_SELECT_MIN` for 24 PCRs).
const SELECT_BYTES: usize = 3;
/// Largest bitmap we accept in a response.
const MAX_SELECT_BYTES: usize = 4;

/// A PCR index (0..=23).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub struct PcrIndex(u8);

impl PcrIndex {
    /// Validates an index.
    pub fn new(n: u8) -> Option<Self> {
        (n < NUM_PCRS).then_some(PcrIndex(n))
    }
    /// The number.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl std::fmt::Display for PcrIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A set of PCRs as a bitmap (bit n = PCR n).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PcrSet(u32);

impl PcrSet {
    /// The empty set.
    pub const EMPTY: PcrSet = PcrSet(0);

    /// Set of the given PCRs.
    pub fn of(pcrs: &[PcrIndex]) -> Self {
        PcrSet(pcrs.iter().fold(0, |acc, p| acc | 1 << p.0))
    }
    /// Whether `p` is in the set.
    pub fn contains(self, p: PcrIndex) -> bool {
        self.0 & (1 << p.0) != 0
    }
    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Members in ascending order.
    pub fn iter(self) -> impl Iterator<Item = PcrIndex> {
        (0..NUM_PCRS)
            .map(PcrIndex)
            .filter(move |&p| self.contains(p))
    }
    /// Set difference.
    pub fn without(self, other: PcrSet) -> PcrSet {
        PcrSet(self.0 & !other.0)
    }
    /// Whether every member of `self` is in `other`.
    pub fn is_subset(self, other: PcrSet) -> bool {
        self.0 & !other.0 == 0
    }
    fn bitmap(self) -> [u8; SELECT_BYTES] {
        let b = self.0.to_le_bytes();
        [b[0], b[1], b[2]]
    }
}

pub(crate) fn header(out: &mut Vec<u8>, tag: u16, cc: u32) {
    out.extend_from_slice(&tag.to_be_bytes());
    out.extend_from_slice(&[0; 4]); // size, patched by finish()
    out.extend_from_slice(&cc.to_be_bytes());
}

pub(crate) fn finish(mut out: Vec<u8>) -> Vec<u8> {
    // Commands we build are a few dozen bytes: the length always fits in u32.
    let len = u32::try_from(out.len()).unwrap_or(u32::MAX);
    out[2..6].copy_from_slice(&len.to_be_bytes());
    out
}

/// Marshals `TPM2_PCR_Read` for the SHA-256 bank.
pub fn pcr_read_command(pcrs: PcrSet) -> Vec<u8> {
    let mut c = Vec::with_capacity(20);
    header(&mut c, TPM_ST_NO_SESSIONS, TPM_CC_PCR_READ);
    c.extend_from_slice(&1u32.to_be_bytes()); // TPML_PCR_SELECTION.count
    c.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    c.push(SELECT_BYTES as u8);
    c.extend_from_slice(&pcrs.bitmap());
    finish(c)
}

/// Marshals `TPM2_PCR_Extend` of the SHA-256 bank with a password session, empty auth.
pub fn pcr_extend_command(pcr: PcrIndex, digest: &Sha256Digest) -> Vec<u8> {
    let mut c = Vec::with_capacity(64);
    header(&mut c, TPM_ST_SESSIONS, TPM_CC_PCR_EXTEND);
    c.extend_from_slice(&u32::from(pcr.0).to_be_bytes()); // pcrHandle = PCR index
                                                          // Authorization area: TPMS_AUTH_COMMAND for TPM_RS_PW.
    let mut auth = Vec::with_capacity(9);
    auth.extend_from_slice(&TPM_RS_PW.to_be_bytes());
    auth.extend_from_slice(&0u16.to_be_bytes()); // nonceCaller: empty
    auth.push(0); // sessionAttributes
    auth.extend_from_slice(&0u16.to_be_bytes()); // hmac (password): empty
    c.extend_from_slice(&(auth.len() as u32).to_be_bytes());
    c.extend_from_slice(&auth);
    // TPML_DIGEST_VALUES with one TPMT_HA.
    c.extend_from_slice(&1u32.to_be_bytes());
    c.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    c.extend_from_slice(&digest.0);
    finish(c)
}

/// A bounds-checked big-endian reader.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::TpmMalformed(format!("truncated {what}")));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn end(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::TpmMalformed(format!(
                "{} trailing bytes",
                self.buf.len()
            )))
        }
    }
}

/// Checks the response header and returns the reader positioned after it.
fn response<'a>(buf: &'a [u8], command: &'static str, tag: u16) -> Result<Reader<'a>> {
    let mut r = Reader { buf };
    let got_tag = r.u16("response tag")?;
    let size = r.u32("response size")?;
    let rc = r.u32("response code")?;
    if usize::try_from(size).ok() != Some(buf.len()) {
        return Err(Error::TpmMalformed(format!(
            "responseSize {size} but {} bytes received",
            buf.len()
        )));
    }
    if rc != 0 {
        return Err(Error::TpmResponseCode { command, rc });
    }
    if got_tag != tag {
        return Err(Error::TpmMalformed(format!(
            "unexpected tag {got_tag:#06x}"
        )));
    }
    Ok(r)
}

/// A parsed `TPM2_PCR_Read` response (SHA-256 bank).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PcrReadResponse {
    /// `pcrUpdateCounter`.
    pub update_counter: u32,
    /// The PCRs the TPM actually returned (ascending), with their values.
    pub values: Vec<(PcrIndex, Sha256Digest)>,
}

/// Parses a `TPM2_PCR_Read` response to a request for `asked`.
pub fn parse_pcr_read_response(buf: &[u8], asked: PcrSet) -> Result<PcrReadResponse> {
    let mut r = response(buf, "PCR_Read", TPM_ST_NO_SESSIONS)?;
    let update_counter = r.u32("pcrUpdateCounter")?;
    let banks = r.u32("TPML_PCR_SELECTION.count")?;
    if banks > 1 {
        return Err(Error::TpmMalformed(format!(
            "{banks} banks returned, asked for 1"
        )));
    }
    let mut returned = PcrSet::EMPTY;
    for _ in 0..banks {
        let alg = r.u16("TPMS_PCR_SELECTION.hash")?;
        if alg != TPM_ALG_SHA256 {
            return Err(Error::TpmMalformed(format!(
                "bank {alg:#06x} returned, asked for SHA-256"
            )));
        }
        let n = usize::from(r.u8("sizeofSelect")?);
        if n > MAX_SELECT_BYTES {
            return Err(Error::TpmMalformed(format!("sizeofSelect {n} too large")));
        }
        let bits = r.take(n, "pcrSelect")?;
        let mut word = [0u8; 4];
        word[..n].copy_from_slice(bits);
        returned = PcrSet(u32::from_le_bytes(word));
    }
    if !returned.is_subset(asked) {
        return Err(Error::TpmMalformed(format!(
            "returned PCRs {:?} not asked for",
            returned.without(asked).iter().collect::<Vec<_>>()
        )));
    }
    let count = r.u32("TPML_DIGEST.count")?;
    let expected = returned.iter().count();
    if usize::try_from(count).ok() != Some(expected) {
        return Err(Error::TpmMalformed(format!(
            "{count} digests for {expected} selected PCRs"
        )));
    }
    let mut values = Vec::with_capacity(expected);
    for pcr in returned.iter() {
        let size = usize::from(r.u16("TPM2B_DIGEST.size")?);
        if size != Sha256Digest::LEN {
            return Err(Error::TpmMalformed(format!(
                "PCR {pcr} digest has {size} bytes, not 32"
            )));
        }
        let mut d = [0u8; 32];
        d.copy_from_slice(r.take(size, "digest")?);
        values.push((pcr, Sha256Digest(d)));
    }
    r.end()?;
    Ok(PcrReadResponse {
        update_counter,
        values,
    })
}

/// Parses a `TPM2_PCR_Extend` response.
pub fn parse_pcr_extend_response(buf: &[u8]) -> Result<()> {
    parse_empty_session_response(buf, "PCR_Extend")
}

/// Whether `rc` says "no such handle" (`TPM_RC_HANDLE` in format 1, any parameter or
/// handle number), e.g. `NV_ReadPublic` of an index that is not defined.
pub fn rc_is_no_handle(rc: u32) -> bool {
    rc & 0x80 != 0 && rc & 0x3F == 0x0B
}

/// Whether `rc` asks the caller to send the command again: `TPM_RC_RETRY`,
/// `TPM_RC_YIELDED`, `TPM_RC_TESTING` or `TPM_RC_NV_RATE` (a TPM pacing NV
/// writes, as counters without `orderly` do on every increment).
pub fn rc_is_retry(rc: u32) -> bool {
    matches!(rc, 0x0922 | 0x0908 | 0x090A | 0x0920)
}

/// Sends `command` until the TPM stops answering "retry" (at most 100 times,
/// 20 ms apart); returns the last response.
pub fn transact_retrying(t: &mut dyn Transport, command: &[u8]) -> Result<Vec<u8>> {
    let mut resp = t.transact(command)?;
    for _ in 0..100 {
        let rc = resp
            .get(6..10)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .unwrap_or(0);
        if !rc_is_retry(rc) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        resp = t.transact(command)?;
    }
    Ok(resp)
}

/// Appends `authorizationSize` and one `TPMS_AUTH_COMMAND` for `TPM_RS_PW` with an
/// empty password.
fn password_session(c: &mut Vec<u8>) {
    c.extend_from_slice(&9u32.to_be_bytes());
    c.extend_from_slice(&TPM_RS_PW.to_be_bytes());
    c.extend_from_slice(&0u16.to_be_bytes()); // nonceCaller: empty
    c.push(0); // sessionAttributes
    c.extend_from_slice(&0u16.to_be_bytes()); // hmac (password): empty
}

/// The public area of an NV index (`TPMS_NV_PUBLIC`) as the ledger uses it: no
/// authorisation policy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NvPublic {
    /// The index handle (`0x01xxxxxx`).
    pub index: u32,
    /// Its name algorithm.
    pub name_alg: u16,
    /// `TPMA_NV` bits.
    pub attributes: u32,
    /// Length of its `authPolicy` (0 for the ledger).
    pub auth_policy_len: u16,
    /// Its size in bytes.
    pub data_size: u16,
}

/// Marshals `TPM2_NV_ReadPublic` (no session).
pub fn nv_read_public_command(index: u32) -> Vec<u8> {
    let mut c = Vec::with_capacity(14);
    header(&mut c, TPM_ST_NO_SESSIONS, TPM_CC_NV_READ_PUBLIC);
    c.extend_from_slice(&index.to_be_bytes());
    finish(c)
}

/// Parses a `TPM2_NV_ReadPublic` response (`TPM2B_NV_PUBLIC`, `TPM2B_NAME`).
pub fn parse_nv_read_public_response(buf: &[u8]) -> Result<NvPublic> {
    let mut r = response(buf, "NV_ReadPublic", TPM_ST_NO_SESSIONS)?;
    let size = usize::from(r.u16("nvPublic.size")?);
    let mut p = Reader {
        buf: r.take(size, "nvPublic")?,
    };
    let index = p.u32("nvIndex")?;
    let name_alg = p.u16("nameAlg")?;
    let attributes = p.u32("attributes")?;
    let auth_policy_len = p.u16("authPolicy.size")?;
    p.take(usize::from(auth_policy_len), "authPolicy")?;
    let data_size = p.u16("dataSize")?;
    p.end()?;
    let name = usize::from(r.u16("nvName.size")?);
    r.take(name, "nvName")?;
    r.end()?;
    Ok(NvPublic {
        index,
        name_alg,
        attributes,
        auth_policy_len,
        data_size,
    })
}

/// Marshals `TPM2_NV_DefineSpace` under the owner hierarchy (empty owner password),
/// with an empty index authorisation and no policy.
pub fn nv_define_space_command(public: &NvPublic) -> Vec<u8> {
    let mut c = Vec::with_capacity(48);
    header(&mut c, TPM_ST_SESSIONS, TPM_CC_NV_DEFINE_SPACE);
    c.extend_from_slice(&TPM_RH_OWNER.to_be_bytes());
    password_session(&mut c);
    c.extend_from_slice(&0u16.to_be_bytes()); // TPM2B_AUTH: empty
    c.extend_from_slice(&14u16.to_be_bytes()); // TPM2B_NV_PUBLIC.size
    c.extend_from_slice(&public.index.to_be_bytes());
    c.extend_from_slice(&public.name_alg.to_be_bytes());
    c.extend_from_slice(&public.attributes.to_be_bytes());
    c.extend_from_slice(&0u16.to_be_bytes()); // authPolicy: empty
    c.extend_from_slice(&public.data_size.to_be_bytes());
    finish(c)
}

/// Marshals `TPM2_NV_Write` of `data` (at most [`NV_CHUNK`] bytes) at `offset`,
/// authorised by the index itself (empty password).
pub fn nv_write_command(index: u32, offset: u16, data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len().min(NV_CHUNK)).unwrap_or(0);
    let data = &data[..usize::from(len)];
    let mut c = Vec::with_capacity(40 + data.len());
    header(&mut c, TPM_ST_SESSIONS, TPM_CC_NV_WRITE);
    c.extend_from_slice(&index.to_be_bytes()); // authHandle
    c.extend_from_slice(&index.to_be_bytes()); // nvIndex
    password_session(&mut c);
    c.extend_from_slice(&len.to_be_bytes());
    c.extend_from_slice(data);
    c.extend_from_slice(&offset.to_be_bytes());
    finish(c)
}

/// Marshals a command on one NV index authorised by the index itself
/// (empty password) with no parameters: `NV_Increment`, `NV_WriteLock`.
pub fn nv_self_auth_command(cc: u32, index: u32) -> Vec<u8> {
    let mut c = Vec::with_capacity(32);
    header(&mut c, TPM_ST_SESSIONS, cc);
    c.extend_from_slice(&index.to_be_bytes()); // authHandle
    c.extend_from_slice(&index.to_be_bytes()); // nvIndex
    password_session(&mut c);
    finish(c)
}

/// Marshals `TPM2_NV_Read` of `size` bytes (at most [`NV_CHUNK`]) at `offset`.
pub fn nv_read_command(index: u32, offset: u16, size: u16) -> Vec<u8> {
    let mut c = Vec::with_capacity(32);
    header(&mut c, TPM_ST_SESSIONS, TPM_CC_NV_READ);
    c.extend_from_slice(&index.to_be_bytes()); // authHandle
    c.extend_from_slice(&index.to_be_bytes()); // nvIndex
    password_session(&mut c);
    c.extend_from_slice(&size.to_be_bytes());
    c.extend_from_slice(&offset.to_be_bytes());
    finish(c)
}

/// Reads the `TPMS_AUTH_RESPONSE` of a password session and checks nothing follows.
fn password_session_response(mut r: Reader<'_>) -> Result<()> {
    let nonce = usize::from(r.u16("nonceTPM.size")?);
    r.take(nonce, "nonceTPM")?;
    r.u8("sessionAttributes")?;
    let hmac = usize::from(r.u16("hmac.size")?);
    r.take(hmac, "hmac")?;
    r.end()
}

/// Parses the response of a command with a password session and no response
/// parameters (`NV_DefineSpace`, `NV_Write`, `PCR_Extend`).
pub fn parse_empty_session_response(buf: &[u8], command: &'static str) -> Result<()> {
    let mut r = response(buf, command, TPM_ST_SESSIONS)?;
    let params = r.u32("parameterSize")?;
    if params != 0 {
        return Err(Error::TpmMalformed(format!(
            "{command}: parameterSize {params}, expected 0"
        )));
    }
    password_session_response(r)
}

/// Parses a `TPM2_NV_Read` response; the data must be exactly `size` bytes.
pub fn parse_nv_read_response(buf: &[u8], size: u16) -> Result<Vec<u8>> {
    let mut r = response(buf, "NV_Read", TPM_ST_SESSIONS)?;
    let params = r.u32("parameterSize")?;
    let len = r.u16("data.size")?;
    if len != size || params != u32::from(size) + 2 {
        return Err(Error::TpmMalformed(format!(
            "NV_Read returned {len} bytes (parameterSize {params}), asked for {size}"
        )));
    }
    let data = r.take(usize::from(len), "data")?.to_vec();
    password_session_response(r)?;
    Ok(data)
}

/// Something that carries one TPM command and returns its response.
pub trait Transport {
    /// Sends `command`, returns the complete response.
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>>;
}

/// A TPM reached over a byte stream: a character device (`/dev/tpmrm0`) or a TCP or
/// Unix socket to swtpm's server (raw TPM commands, no framing).
pub struct StreamTransport<S>(pub S);

impl<S: Read + Write> Transport for StreamTransport<S> {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        let io = |what| move |source| Error::TpmIo { what, source };
        self.0.write_all(command).map_err(io("write command"))?;
        self.0.flush().map_err(io("flush command"))?;
        let mut buf = vec![0u8; MAX_RESPONSE];
        let mut filled = 0;
        loop {
            let n = self
                .0
                .read(&mut buf[filled..])
                .map_err(io("read response"))?;
            if n == 0 {
                return Err(Error::TpmIo {
                    what: "read response",
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
            filled += n;
            if filled >= 6 {
                let size = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]);
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if !(10..=MAX_RESPONSE).contains(&size) {
                    return Err(Error::TpmMalformed(format!(
                        "responseSize {size} out of range"
                    )));
                }
                if filled >= size {
                    buf.truncate(filled);
                    return Ok(buf);
                }
            }
            if filled == buf.len() {
                return Err(Error::TpmMalformed(
                    "response longer than 4096 bytes".into(),
                ));
            }
        }
    }
}

/// Reads the SHA-256 values of `pcrs`, issuing as many `TPM2_PCR_Read` commands as the
/// TPM needs (it may return fewer PCRs than asked). If the `pcrUpdateCounter` changes
/// between commands, starts over so that all values come from one state.
pub fn read_pcrs(
    t: &mut dyn Transport,
    pcrs: &[PcrIndex],
) -> Result<Vec<(PcrIndex, Sha256Digest)>> {
    let want = PcrSet::of(pcrs);
    'restart: for _attempt in 0..4 {
        let mut missing = want;
        let mut got: Vec<(PcrIndex, Sha256Digest)> = Vec::new();
        let mut counter = None;
        while !missing.is_empty() {
            let resp = t.transact(&pcr_read_command(missing))?;
            let parsed = parse_pcr_read_response(&resp, missing)?;
            if parsed.values.is_empty() {
                return Err(Error::TpmMalformed(format!(
                    "TPM returned none of PCRs {:?}; is the SHA-256 bank allocated?",
                    missing.iter().map(PcrIndex::get).collect::<Vec<_>>()
                )));
            }
            if counter.is_some_and(|c| c != parsed.update_counter) {
                continue 'restart;
            }
            counter = Some(parsed.update_counter);
            for (p, d) in parsed.values {
                missing = missing.without(PcrSet::of(&[p]));
                got.push((p, d));
            }
        }
        got.sort_by_key(|(p, _)| *p);
        return Ok(got);
    }
    Err(Error::TpmMalformed(
        "PCRs kept changing while being read (pcrUpdateCounter moved 4 times)".into(),
    ))
}

/// Extends `pcr` in the SHA-256 bank with `digest`.
pub fn extend_pcr(t: &mut dyn Transport, pcr: PcrIndex, digest: &Sha256Digest) -> Result<()> {
    let resp = t.transact(&pcr_extend_command(pcr, digest))?;
    parse_pcr_extend_response(&resp)
}

/// The value a SHA-256 PCR takes after extending `old` with `digest`.
pub fn extended_value(old: &Sha256Digest, digest: &Sha256Digest) -> Sha256Digest {
    let mut b = [0u8; 64];
    b[..32].copy_from_slice(&old.0);
    b[32..].copy_from_slice(&digest.0);
    Sha256Digest::of(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u8) -> PcrIndex {
        PcrIndex::new(n).unwrap()
    }

    #[test]
    fn pcr_read_command_bytes_match_spec_layout() {
        let c = pcr_read_command(PcrSet::of(&[p(4), p(7), p(11)]));
        assert_eq!(
            c,
            [
                0x80,
                0x01,
                0,
                0,
                0,
                20,
                0,
                0,
                0x01,
                0x7E, // header
                0,
                0,
                0,
                1,
                0x00,
                0x0B,
                3, // one SHA-256 selection, 3 bytes
                0b1001_0000,
                0b0000_1000,
                0, // PCRs 4, 7 | 11
            ]
        );
    }

    #[test]
    fn pcr_extend_command_bytes_match_spec_layout() {
        let c = pcr_extend_command(p(16), &Sha256Digest([0xAA; 32]));
        let mut want = vec![0x80, 0x02, 0, 0, 0, 65, 0, 0, 0x01, 0x82, 0, 0, 0, 16];
        want.extend_from_slice(&[0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[0, 0, 0, 1, 0, 0x0B]);
        want.extend_from_slice(&[0xAA; 32]);
        assert_eq!(c, want);
    }

    pub(crate) fn read_response(counter: u32, returned: &[u8], digests: &[[u8; 32]]) -> Vec<u8> {
        let mut r = vec![0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 0];
        r.extend_from_slice(&counter.to_be_bytes());
        r.extend_from_slice(&[0, 0, 0, 1, 0, 0x0B, 3]);
        let set = PcrSet::of(&returned.iter().map(|&n| p(n)).collect::<Vec<_>>());
        r.extend_from_slice(&set.bitmap());
        r.extend_from_slice(&(digests.len() as u32).to_be_bytes());
        for d in digests {
            r.extend_from_slice(&[0, 32]);
            r.extend_from_slice(d);
        }
        let len = r.len() as u32;
        r[2..6].copy_from_slice(&len.to_be_bytes());
        r
    }

    #[test]
    fn parses_a_well_formed_read_response() {
        let asked = PcrSet::of(&[p(4), p(7), p(11)]);
        let r = read_response(9, &[4, 11], &[[1; 32], [2; 32]]);
        let parsed = parse_pcr_read_response(&r, asked).unwrap();
        assert_eq!(parsed.update_counter, 9);
        assert_eq!(
            parsed.values,
            vec![
                (p(4), Sha256Digest([1; 32])),
                (p(11), Sha256Digest([2; 32]))
            ]
        );
    }

    #[test]
    fn rejects_bad_read_responses() {
        let asked = PcrSet::of(&[p(4), p(7)]);
        // PCR not asked for.
        assert!(parse_pcr_read_response(&read_response(0, &[5], &[[0; 32]]), asked).is_err());
        // Digest count does not match selection.
        assert!(parse_pcr_read_response(&read_response(0, &[4, 7], &[[0; 32]]), asked).is_err());
        // Trailing byte (size patched to match).
        let mut r = read_response(0, &[4], &[[0; 32]]);
        r.push(0);
        let len = r.len() as u32;
        r[2..6].copy_from_slice(&len.to_be_bytes());
        assert!(parse_pcr_read_response(&r, asked).is_err());
        // Size field disagrees with buffer.
        let mut r = read_response(0, &[4], &[[0; 32]]);
        r.pop();
        assert!(parse_pcr_read_response(&r, asked).is_err());
        // Error response code.
        let e =
            parse_pcr_read_response(&[0x80, 1, 0, 0, 0, 10, 0, 0, 0x01, 0x01], asked).unwrap_err();
        assert!(matches!(e, Error::TpmResponseCode { rc: 0x101, .. }));
    }

    /// A scripted TPM that returns at most `per_call` PCRs per command.
    struct FakeTpm {
        per_call: usize,
        counters: Vec<u32>,
        calls: usize,
    }

    impl Transport for FakeTpm {
        fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>> {
            let bits = u32::from_le_bytes([command[17], command[18], command[19], 0]);
            let asked: Vec<u8> = (0..24).filter(|n| bits & (1 << n) != 0).collect();
            let give: Vec<u8> = asked.into_iter().take(self.per_call).collect();
            let digests: Vec<[u8; 32]> = give.iter().map(|&n| [n; 32]).collect();
            let counter = self.counters.get(self.calls).copied().unwrap_or(0);
            self.calls += 1;
            Ok(read_response(counter, &give, &digests))
        }
    }

    #[test]
    fn read_pcrs_loops_until_all_are_returned() {
        let mut t = FakeTpm {
            per_call: 1,
            counters: vec![],
            calls: 0,
        };
        let v = read_pcrs(&mut t, &[p(11), p(4), p(7)]).unwrap();
        assert_eq!(t.calls, 3);
        assert_eq!(
            v,
            vec![
                (p(4), Sha256Digest([4; 32])),
                (p(7), Sha256Digest([7; 32])),
                (p(11), Sha256Digest([11; 32]))
            ]
        );
    }

    #[test]
    fn read_pcrs_restarts_when_update_counter_moves() {
        let mut t = FakeTpm {
            per_call: 2,
            counters: vec![1, 2, 2, 2],
            calls: 0,
        };
        let v = read_pcrs(&mut t, &[p(4), p(7), p(11)]).unwrap();
        assert_eq!(t.calls, 4);
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn read_pcrs_fails_when_tpm_returns_nothing() {
        let mut t = FakeTpm {
            per_call: 0,
            counters: vec![],
            calls: 0,
        };
        assert!(read_pcrs(&mut t, &[p(4)]).is_err());
    }

    #[test]
    fn extend_response_parses() {
        let ok = [0x80, 2, 0, 0, 0, 19, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0];
        parse_pcr_extend_response(&ok).unwrap();
        assert!(parse_pcr_extend_response(&ok[..18]).is_err());
    }

    #[test]
    fn extended_value_is_sha256_of_concatenation() {
        let old = Sha256Digest([0; 32]);
        let d = Sha256Digest([1; 32]);
        let mut cat = vec![0u8; 32];
        cat.extend_from_slice(&[1; 32]);
        assert_eq!(extended_value(&old, &d), Sha256Digest::of(&cat));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsers_never_panic(b in prop::collection::vec(any::<u8>(), 0..600), asked in any::<u32>()) {
            let _ = parse_pcr_read_response(&b, PcrSet(asked & 0x00ff_ffff));
            let _ = parse_pcr_extend_response(&b);
        }

        #[test]
        fn parsers_never_panic_on_mutated_valid_response(
            returned in prop::collection::btree_set(0u8..24, 0..8),
            pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()
        ) {
            let returned: Vec<u8> = returned.into_iter().collect();
            let digests: Vec<[u8; 32]> = returned.iter().map(|&n| [n; 32]).collect();
            let mut r = tests::read_response(1, &returned, &digests);
            let asked = PcrSet(0x00ff_ffff);
            prop_assert!(parse_pcr_read_response(&r, asked).is_ok());
            let i = pos.index(r.len());
            if cut { r.truncate(i); } else { r[i] = byte; }
            let _ = parse_pcr_read_response(&r, asked);
        }
    }
}
