//! The codec of the node's watch streams: protobuf as usual, with a small encode buffer. Each
//! open response stream keeps its encode buffer for as long as it lives, and tonic's default
//! (8 KiB) would be most of what an idle subscriber costs the node; a watch message is a few
//! hundred bytes, and a larger one grows the buffer for that write.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// Encode buffer each stream starts with.
const STREAM_BUFFER: usize = 1024;
/// Bytes gathered before a write is handed on while more messages are ready (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Protobuf with a small encode buffer per stream (used by the generated watch service).
#[derive(Debug)]
pub struct StreamCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StreamCodec<T, U> {
    fn default() -> Self {
        StreamCodec(PhantomData)
    }
}

impl<T, U> Codec for StreamCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(STREAM_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::default())
    }
}
