// deeprc-bridge: a libtorch tensor over memory that Rust owns, with a
// deleter. `tch::Tensor::from_blob` borrows memory without a deleter, so
// its tensors (and every view of them) could outlive the memory; a tensor
// made here holds a reference to the Rust owner instead (`ctx`), released
// by libtorch when the storage's last user goes away.
#include <ATen/ATen.h>

#include <cstdlib>
#include <cstring>
#include <exception>

extern "C" {

typedef void (*deeprc_release_fn)(void *ctx);

// A new `at::Tensor*` (the pointer type of tch's `C_tensor`) viewing `data`
// with the given sizes and strides (in elements). On success libtorch owns
// `ctx` and calls `release(ctx)` exactly once, when the storage is freed.
// On failure returns nullptr and sets `*err` (free it with
// deeprc_free_cstr); `ctx` is then released already or leaked, never used
// again.
void *deeprc_tensor_from_blob(void *data, const int64_t *sizes, const int64_t *strides, size_t ndim,
                              int scalar_type, void *ctx, deeprc_release_fn release, char **err) {
    try {
        auto options = at::TensorOptions().dtype(static_cast<at::ScalarType>(scalar_type)).device(at::kCPU);
        at::Tensor t = at::from_blob(
            data, at::IntArrayRef(sizes, ndim), at::IntArrayRef(strides, ndim),
            [ctx, release](void *) { release(ctx); }, options);
        return new at::Tensor(std::move(t));
    } catch (const std::exception &e) {
        *err = strdup(e.what());
        return nullptr;
    } catch (...) {
        *err = strdup("unknown C++ exception");
        return nullptr;
    }
}

void deeprc_free_cstr(char *s) { std::free(s); }
}
