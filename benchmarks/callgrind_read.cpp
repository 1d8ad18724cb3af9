// Instructions per read, for valgrind --tool=callgrind (a noise-free second measure of the read path).
//
//     callgrind_read <peer> <iterations>
//
// Reads the calling thread's existing value <iterations> times through the same out-of-line accessors
// as the benchmark binary (peers.cpp, and peers_dso.cpp in the shared libraries). run.sh runs it twice,
// with N and 2N iterations, and divides the difference of the instruction totals by N: start-up, the
// first-use setup and exit cancel, leaving the instructions of one loop iteration (the call, the accessor
// body, the load and the loop's own increment and branch, the same for every peer).
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <ctxlocal/storage.hpp>

#include "peers.hpp"

namespace {

template <class Get>
long loop(long n, Get get) {
    long sum = 0;
    for (long i = 0; i < n; ++i) {
        sum += get();
        __asm__ volatile("" : "+r"(sum));  // keep each read: no vectorising, no folding
    }
    return sum;
}

}  // namespace

int main(int argc, char** argv) {
    using namespace bench;
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s <peer> <iterations>\n", argv[0]);
        return 2;
    }
    const char* peer = argv[1];
    const long n = std::atol(argv[2]);
    long sum = 0;
    if (std::strcmp(peer, "raw_thread_local") == 0) {
        RawTls::ensure();
        sum = loop(n, [] { return *RawTls::get(); });
    } else if (std::strcmp(peer, "ctxlocal") == 0) {
        Ctx::ensure();
        sum = loop(n, [] { return *Ctx::get(); });
    } else if (std::strcmp(peer, "ctxlocal_in_storage") == 0) {
        const ctxlocal::Storage storage;
        const ctxlocal::Storage::Scope in(storage);  // the same get(), reading the Storage's value
        Ctx::ensure();
        sum = loop(n, [] { return *Ctx::get(); });
    } else if (std::strcmp(peer, "ctxlocal_shared_library") == 0) {
        CtxSharedLibrary::ensure();
        sum = loop(n, [] { return *CtxSharedLibrary::get(); });
    } else if (std::strcmp(peer, "ctxlocal_shared_library_dynamic_tls") == 0) {
        CtxSharedLibraryDynamicTls::ensure();
        sum = loop(n, [] { return *CtxSharedLibraryDynamicTls::get(); });
    } else if (std::strcmp(peer, "raw_thread_local_shared_library") == 0) {
        RawTlsSharedLibrary::ensure();
        sum = loop(n, [] { return *RawTlsSharedLibrary::get(); });
    } else if (std::strcmp(peer, "raw_thread_local_shared_library_dynamic_tls") == 0) {
        RawTlsSharedLibraryDynamicTls::ensure();
        sum = loop(n, [] { return *RawTlsSharedLibraryDynamicTls::get(); });
    } else if (std::strcmp(peer, "pthread_getspecific") == 0) {
        Pthread::ensure();
        sum = loop(n, [] { return *Pthread::get(); });
    } else if (std::strcmp(peer, "boost_tss") == 0) {
        BoostTss::ensure();
        sum = loop(n, [] { return *BoostTss::get(); });
    } else if (std::strcmp(peer, "tbb_ets") == 0) {
        TbbEts::ensure();
        sum = loop(n, [] { return *TbbEts::get(); });
    } else if (std::strcmp(peer, "mutex_map") == 0) {
        MutexMap::ensure();
        sum = loop(n, [] { return *MutexMap::get(); });
    } else if (std::strcmp(peer, "raw_thread_local_pointer") == 0) {
        proxy::ensure();
        sum = loop(n, [] { return proxy::raw_pointer(); });
    } else if (std::strcmp(peer, "proxy_over_local") == 0) {
        proxy::ensure();
        sum = loop(n, [] { return proxy::over_local(); });
    } else if (std::strcmp(peer, "proxy_over_stack") == 0) {
        proxy::ensure();
        sum = loop(n, [] { return proxy::over_stack(); });
    } else if (std::strcmp(peer, "proxy_over_local_pointer") == 0) {
        proxy::ensure();
        sum = loop(n, [] { return proxy::over_local_pointer(); });
    } else {
        std::fprintf(stderr, "unknown peer %s\n", peer);
        return 2;
    }
    std::printf("%ld\n", sum);
    return 0;
}
