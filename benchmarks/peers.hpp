// The contenders, each behind the same small set of operations so that one benchmark template measures
// them all. Every operation is defined in peers.cpp, out of line and marked BENCH_OPAQUE.
//
// Why out of line: a thread-local address is loop-invariant. If the compiler could see the body of an
// accessor inside a benchmark loop it would compute the TLS address (or the Local's slot) once, before
// the loop, and the loop would measure nothing. So every access goes through a non-inlined function
// (`__attribute__((noinline))`, plus GCC's `noipa` so that it cannot prove the function pure and hoist
// the call either), defined in another translation unit. Each peer pays the same call; ratios compare
// the bodies. benchmark::DoNotOptimize keeps the loaded values alive.
#pragma once

#include <cstddef>
#include <memory>

#if defined(__GNUC__) && !defined(__clang__)
#define BENCH_OPAQUE __attribute__((noinline, noipa))
#else
#define BENCH_OPAQUE __attribute__((noinline))
#endif

// Calls into the benchmark's shared libraries (peers_dso.cpp) load the function's address from the GOT
// instead of jumping through a PLT stub, so that they cost the same instruction as the direct calls into
// peers.cpp: the rows compare the bodies, not the dynamic linker's trampoline. Clang has no such
// attribute: built with Clang, each call into a shared library goes through the PLT (one more jmp).
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#define BENCH_NOPLT __attribute__((noplt))
#else
#define BENCH_NOPLT
#endif

namespace bench {

using Value = long;

/// What a proxy points at: "request->field".
struct Obj {
    long field = 1;
};

// Each peer: ensure() gives the calling thread a value; get() reads it; replace(v) replaces it with a
// new value; make() then reset() creates and releases it; ensure_stack()/push/pop/top work on the
// calling thread's stack (a std::vector<Value> held by the peer); set4() sets four distinct per-thread
// values (the thread-start benchmark); lifecycle() creates a per-thread object, gives the calling thread
// a value, and destroys the object. Many is a batch of fresh objects for first-use; first_use(m, i)
// makes the calling thread's value of object i. Peers that have no such operation omit it.

/// `thread_local` keyword: the floor.
struct RawTls {
    static constexpr const char* name = "raw_thread_local";
    static void ensure();
    static Value* get();
    static void replace(Value v);
    static void make();   // thread_local std::optional<Value>::emplace (a thread_local cannot be released)
    static void reset();  // ... ::reset()
    static void ensure_stack();
    static void push(Value v);
    static Value pop();
    static Value* top();
    static void set4();
};

/// ctxlocal::Local / LocalStack.
struct Ctx {
    static constexpr const char* name = "ctxlocal";
    static void ensure();
    static Value* get();
    static void replace(Value v);  // Local::emplace
    static void make();            // Local::value() on a thread without a value
    static void reset();           // Local::reset()
    static void ensure_stack();
    static void push(Value v);  // LocalStack::push
    static Value pop();         // LocalStack::pop
    static Value* top();        // LocalStack::top
    static void set4();
    static void lifecycle();
    struct Many;
    static std::shared_ptr<Many> many(std::size_t n);  // shared_ptr: Many is incomplete here
    static Value& first_use(Many& m, std::size_t i);
    static long sum_all();  // Local::for_each
    static void ensure_each();
};

/// ctxlocal::Local::get() compiled into a shared library (peers_dso.cpp, built with -fPIC and otherwise
/// default options): the table pointer has the initial-exec TLS model (CTXLOCAL_TLS_MODEL's default), so
/// the read is a thread-local load through the GOT's TLS offset, no call. Read rows only.
struct CtxSharedLibrary {
    static constexpr const char* name = "ctxlocal_shared_library";
    BENCH_NOPLT static void ensure();
    BENCH_NOPLT static Value* get();
};

/// The same library built with -DCTXLOCAL_TLS_MODEL= (the opt-out: the compiler's default model, general
/// dynamic in a shared library), so every read calls __tls_get_addr. Read rows only.
struct CtxSharedLibraryDynamicTls {
    static constexpr const char* name = "ctxlocal_shared_library_dynamic_tls";
    BENCH_NOPLT static void ensure();
    BENCH_NOPLT static Value* get();
};

/// The floor of the shared-library rows: a raw `thread_local` in the same library, read through the same
/// call. With the initial-exec model, like CtxSharedLibrary (the best that hand-written code in a shared
/// library gets: one thread-local load through the GOT's TLS offset).
struct RawTlsSharedLibrary {
    static constexpr const char* name = "raw_thread_local_shared_library";
    BENCH_NOPLT static void ensure();
    BENCH_NOPLT static Value* get();
};

/// A plain `thread_local` in the library built with -DCTXLOCAL_TLS_MODEL=: the compiler's default model
/// (local dynamic in a shared library), so every read calls __tls_get_addr, like
/// CtxSharedLibraryDynamicTls.
struct RawTlsSharedLibraryDynamicTls {
    static constexpr const char* name = "raw_thread_local_shared_library_dynamic_tls";
    BENCH_NOPLT static void ensure();
    BENCH_NOPLT static Value* get();
};

/// POSIX thread-specific data: pthread_getspecific / pthread_setspecific, values on the heap.
struct Pthread {
    static constexpr const char* name = "pthread_getspecific";
    static void ensure();
    static Value* get();
    static void replace(Value v);
    static void make();
    static void reset();
    static void ensure_stack();
    static void push(Value v);
    static Value pop();
    static Value* top();
    static void set4();
    static void lifecycle();
    struct Many;
    static std::shared_ptr<Many> many(std::size_t n);  // shared_ptr: Many is incomplete here
    static Value& first_use(Many& m, std::size_t i);
};

/// boost::thread_specific_ptr.
struct BoostTss {
    static constexpr const char* name = "boost_tss";
    static void ensure();
    static Value* get();
    static void replace(Value v);
    static void make();
    static void reset();
    static void ensure_stack();
    static void push(Value v);
    static Value pop();
    static Value* top();
    static void set4();
    static void lifecycle();
    struct Many;
    static std::shared_ptr<Many> many(std::size_t n);  // shared_ptr: Many is incomplete here
    static Value& first_use(Many& m, std::size_t i);
};

/// tbb::enumerable_thread_specific (default ets_no_key: a per-instance hash of thread ids).
struct TbbEts {
    static constexpr const char* name = "tbb_ets";
    static void ensure();
    static Value* get();
    static void replace(Value v);
    static void make();  // ets<std::optional<Value>>: TBB cannot release one thread's element
    static void reset();
    static void ensure_stack();
    static void push(Value v);
    static Value pop();
    static Value* top();
    static void set4();
    static void lifecycle();
    struct Many;
    static std::shared_ptr<Many> many(std::size_t n);  // shared_ptr: Many is incomplete here
    static Value& first_use(Many& m, std::size_t i);
    static long sum_all();
    static void ensure_each();
    static void clear_each();  // TBB keeps an exited thread's element until clear()
};

/// std::unordered_map<std::thread::id, T> behind a std::mutex: what a newcomer writes, and what old
/// werkzeug did (a dict keyed by thread ident). Every operation locks.
struct MutexMap {
    static constexpr const char* name = "mutex_map";
    static void ensure();
    static Value* get();
    static void replace(Value v);
    static void make();
    static void reset();
    static void ensure_stack();
    static void push(Value v);
    static Value pop();
    static Value* top();
    static void set4();  // sets four values, then erases them (nothing else would at thread exit)
    static void lifecycle();
    struct Many;
    static std::shared_ptr<Many> many(std::size_t n);  // shared_ptr: Many is incomplete here
    static Value& first_use(Many& m, std::size_t i);
    static long sum_all();
    static void ensure_each();
    static void clear_each();  // an exited thread's entry stays unless someone erases it
};

// Proxy dereference, "request->field".
namespace proxy {
void ensure();              // binds every source below on the calling thread
long raw_pointer();         // thread_local Obj* + load: the floor
long local_get();           // Local<Obj>::get()->field
long over_local();          // LocalProxy over a Local<Obj>
long over_stack();          // LocalProxy over a LocalStack<Obj>
long over_local_pointer();  // LocalProxy over a Local<Obj*>
}  // namespace proxy

}  // namespace bench
