//! The protobuf codec of fluxgate's gRPC services: prost, with small buffers.
//!
//! tonic's default codec gives every stream an 8 KiB encode and an 8 KiB decode buffer.
//! Agent streams are many, long-lived and mostly idle, and their messages are a few
//! hundred bytes, so that is most of what an idle stream costs. These buffers start at
//! 256 bytes (an idle stream's keepalives and acks fit) and grow for a larger message
//! like the defaults do, once: a grown buffer is reused.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial size of a stream's encode and decode buffers.
pub const BUFFER_SIZE: usize = 256;
/// Encoded bytes after which a busy stream yields to others (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

#[derive(Debug, Clone)]
pub struct CompactCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for CompactCodec<T, U> {
    fn default() -> Self {
        Self {
            _messages: PhantomData,
        }
    }
}

impl<T, U> Codec for CompactCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}
