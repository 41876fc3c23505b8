//! Guest strings the host can size before it decodes them.
//!
//! A component hands the host a string as a pointer and a length in its own
//! memory, in the encoding it chose (UTF-8, UTF-16, or latin1+UTF-16).
//! `WasmStr` checks the bounds without copying, but it does not say how long
//! the string is: finding out means decoding it, and a UTF-16 or latin1
//! string is *transcoded* into a new UTF-8 allocation of up to 3× its size.
//! A guest passing the same large region many times (one `log` call with 32
//! fields all pointing at its whole memory) would make the host decode and
//! hold gigabytes. [`GuestStr`] records the raw length while lifting, so a
//! host function can refuse an oversized argument before anything is copied.

use std::borrow::Cow;
use wasmtime::component::__internal::{
    wasmtime_environ::component::StringEncoding, CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext,
};
use wasmtime::component::{ComponentType, Lift, WasmStr};
use wasmtime::{StoreContext, ValRaw};

/// The tag wasmtime's canonical ABI sets on a latin1+UTF-16 length that
/// counts UTF-16 code units.
const UTF16_TAG: u32 = 1 << 31;

/// A host call handed the host more argument bytes than one call may lift
/// (the store's hostcall fuel: the instance's memory limit). Raised while
/// lifting a [`GuestStr`], so the task's error names the limit by type.
#[derive(Debug)]
pub(crate) struct ArgumentsTooLarge;

impl std::fmt::Display for ArgumentsTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a host call's arguments exceed what one call may lift")
    }
}

impl std::error::Error for ArgumentsTooLarge {}

/// A string argument still in guest memory, with its size known. Host
/// functions of custom capabilities take strings as `GuestStr` to check
/// their size before the host copies or decodes them.
pub struct GuestStr {
    inner: WasmStr,
    /// Code units: bytes for UTF-8 and latin1, 16-bit units for UTF-16.
    units: usize,
    /// The most UTF-8 bytes decoding can produce.
    max_utf8: usize,
}

impl GuestStr {
    fn sized(inner: WasmStr, raw_len: u32, encoding: StringEncoding) -> GuestStr {
        let raw = raw_len as usize;
        let (units, max_utf8) = match encoding {
            StringEncoding::Utf8 => (raw, raw),
            // A UTF-16 unit decodes to at most 3 UTF-8 bytes (a surrogate
            // pair, two units, to 4).
            StringEncoding::Utf16 => (raw, raw.saturating_mul(3)),
            StringEncoding::CompactUtf16 if raw_len & UTF16_TAG != 0 => {
                let units = (raw_len ^ UTF16_TAG) as usize;
                (units, units.saturating_mul(3))
            }
            // latin1: each byte decodes to 1 or 2 UTF-8 bytes.
            StringEncoding::CompactUtf16 => (raw, raw.saturating_mul(2)),
        };
        GuestStr { inner, units, max_utf8 }
    }

    /// The fewest UTF-8 bytes the decoded string can have: each code unit
    /// decodes to at least one byte. A string whose `min_len` is over a limit
    /// is over it without being decoded.
    pub fn min_len(&self) -> usize {
        self.units
    }

    /// The most UTF-8 bytes decoding it can produce (the host's cost).
    pub fn max_len(&self) -> usize {
        self.max_utf8
    }

    /// Decodes the string if decoding yields at most `limit` bytes; `None`
    /// when it is longer (found from its length alone, or after decoding at
    /// most `max_len` bytes).
    pub fn decode_within<'a, T: 'static>(
        &self,
        store: impl Into<StoreContext<'a, T>>,
        limit: usize,
    ) -> wasmtime::Result<Option<String>> {
        if self.min_len() > limit {
            return Ok(None);
        }
        let text = self.inner.to_str(store)?;
        Ok((text.len() <= limit).then(|| text.into_owned()))
    }

    /// Decodes the string; check [`Self::max_len`] against what the host
    /// may spend first.
    pub fn decode<'a, T: 'static>(&self, store: impl Into<StoreContext<'a, T>>) -> wasmtime::Result<Cow<'a, str>> {
        self.inner.to_str(store)
    }
}

// SAFETY: `GuestStr` has exactly the ABI of `WasmStr` (a pointer/length
// pair) and lifts by delegating to it; it only reads the length as well.
unsafe impl ComponentType for GuestStr {
    type Lower = <WasmStr as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <WasmStr as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <WasmStr as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: see above; validation (alignment, bounds, hostcall fuel) is
// `WasmStr`'s.
unsafe impl Lift for GuestStr {
    fn linear_lift_from_flat(cx: &mut LiftContext<'_>, ty: InterfaceType, src: &Self::Lower) -> wasmtime::Result<Self> {
        let (ptr, raw_len) = (ValRaw::get_u32(&src[0]), ValRaw::get_u32(&src[1]));
        let encoding = cx.options().string_encoding;
        let valid = in_bounds(cx, ptr, raw_len, encoding);
        let inner = WasmStr::linear_lift_from_flat(cx, ty, src).map_err(|e| fuel_or(e, valid))?;
        Ok(GuestStr::sized(inner, raw_len, encoding))
    }

    fn linear_lift_from_memory(cx: &mut LiftContext<'_>, ty: InterfaceType, bytes: &[u8]) -> wasmtime::Result<Self> {
        let word = |at: usize| bytes.get(at..at + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let (ptr, raw_len) = (word(0), word(4));
        let encoding = cx.options().string_encoding;
        let valid = in_bounds(cx, ptr, raw_len, encoding);
        let inner = WasmStr::linear_lift_from_memory(cx, ty, bytes).map_err(|e| fuel_or(e, valid))?;
        Ok(GuestStr::sized(inner, raw_len, encoding))
    }
}

/// Whether a string's pointer is aligned for its encoding and its bytes lie
/// in guest memory: the checks wasmtime makes before it charges the
/// string's bytes to the call's hostcall fuel.
fn in_bounds(cx: &mut LiftContext<'_>, ptr: u32, raw_len: u32, encoding: StringEncoding) -> bool {
    let len = raw_len as usize;
    let (bytes, align) = match encoding {
        StringEncoding::Utf8 => (Some(len), 1),
        StringEncoding::Utf16 => (len.checked_mul(2), 2),
        StringEncoding::CompactUtf16 if raw_len & UTF16_TAG != 0 => {
            (((raw_len ^ UTF16_TAG) as usize).checked_mul(2), 2)
        }
        StringEncoding::CompactUtf16 => (Some(len), 2),
    };
    let ptr = ptr as usize;
    ptr.is_multiple_of(align) && bytes.and_then(|b| ptr.checked_add(b)).is_some_and(|end| end <= cx.memory().len())
}

/// A lift of a valid string can fail only on the call's hostcall fuel:
/// that failure becomes [`ArgumentsTooLarge`]; others keep wasmtime's error.
fn fuel_or(e: wasmtime::Error, valid: bool) -> wasmtime::Error {
    if valid {
        wasmtime::Error::new(ArgumentsTooLarge)
    } else {
        e
    }
}
