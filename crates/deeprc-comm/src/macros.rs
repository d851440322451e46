//! Implements [`Communicator`](crate::Communicator) for a newtype over a
//! `Group` field named `group`.

#[macro_export]
#[doc(hidden)]
macro_rules! delegate_communicator {
    ($t:ty) => {
        impl $crate::Communicator for $t {
            fn rank(&self) -> usize {
                self.group.rank()
            }
            fn size(&self) -> usize {
                self.group.size()
            }
            fn backend(&self) -> Backend {
                self.group.backend()
            }
            fn send(&self, dest: usize, tag: Tag, data: Bytes) -> Result<()> {
                self.group.send(dest, tag, data)
            }
            fn recv(&self, source: usize, tag: Tag) -> Result<Bytes> {
                self.group.recv(source, tag)
            }
            fn barrier(&self) -> Result<()> {
                self.group.barrier()
            }
            fn broadcast(&self, root: usize, data: Bytes) -> Result<Bytes> {
                self.group.broadcast(root, data)
            }
            fn gather(&self, root: usize, data: Bytes) -> Result<Option<Vec<Bytes>>> {
                self.group.gather(root, data)
            }
            fn all_gather(&self, data: Bytes) -> Result<Vec<Bytes>> {
                self.group.all_gather(data)
            }
            fn all_to_all_v(&self, parts: Vec<Bytes>) -> Result<Vec<Bytes>> {
                self.group.all_to_all_v(parts)
            }
            fn all_reduce_raw(&self, data: &mut [u8], dtype: DType, op: ReduceOp) -> Result<()> {
                self.group.all_reduce_raw(data, dtype, op)
            }
            fn split(
                &self,
                color: Option<u32>,
                key: i64,
            ) -> Result<Option<std::sync::Arc<dyn $crate::Communicator>>> {
                self.group.split(color, key)
            }
            fn supports_objects(&self) -> bool {
                self.group.supports_objects()
            }
            fn all_to_all_objects(&self, parts: Vec<AnyBox>) -> Result<Vec<AnyBox>> {
                self.group.all_to_all_objects(parts)
            }
        }
    };
}

/// Implements [`Communicator`](crate::Communicator) for the stub type of a
/// backend that was not compiled in: the type holds an `Infallible` field
/// named `never`, so no value exists and no method can be called.
#[allow(unused_macros)] // unused when every backend is compiled in
macro_rules! uninhabited_communicator {
    ($t:ty, $backend:expr) => {
        impl $crate::Communicator for $t {
            fn rank(&self) -> usize {
                match self.never {}
            }
            fn size(&self) -> usize {
                match self.never {}
            }
            fn backend(&self) -> $crate::Backend {
                $backend
            }
            fn send(&self, _: usize, _: $crate::Tag, _: bytes::Bytes) -> $crate::Result<()> {
                match self.never {}
            }
            fn recv(&self, _: usize, _: $crate::Tag) -> $crate::Result<bytes::Bytes> {
                match self.never {}
            }
            fn barrier(&self) -> $crate::Result<()> {
                match self.never {}
            }
            fn broadcast(&self, _: usize, _: bytes::Bytes) -> $crate::Result<bytes::Bytes> {
                match self.never {}
            }
            fn gather(
                &self,
                _: usize,
                _: bytes::Bytes,
            ) -> $crate::Result<Option<Vec<bytes::Bytes>>> {
                match self.never {}
            }
            fn all_gather(&self, _: bytes::Bytes) -> $crate::Result<Vec<bytes::Bytes>> {
                match self.never {}
            }
            fn all_to_all_v(&self, _: Vec<bytes::Bytes>) -> $crate::Result<Vec<bytes::Bytes>> {
                match self.never {}
            }
            fn all_reduce_raw(
                &self,
                _: &mut [u8],
                _: $crate::DType,
                _: $crate::ReduceOp,
            ) -> $crate::Result<()> {
                match self.never {}
            }
            fn split(
                &self,
                _: Option<u32>,
                _: i64,
            ) -> $crate::Result<Option<std::sync::Arc<dyn $crate::Communicator>>> {
                match self.never {}
            }
        }
    };
}
