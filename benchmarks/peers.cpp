// Definitions of the peers' operations (see peers.hpp for why they live out of line).
#include "peers.hpp"

#include <pthread.h>

#include <boost/thread/tss.hpp>
#include <ctxlocal/ctxlocal.hpp>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include <tbb/enumerable_thread_specific.h>

namespace bench {

using Stack = std::vector<Value>;

// ---------------------------------------------------------------------------------------------------
// raw thread_local
namespace {
thread_local Value raw_value = 0;
thread_local std::optional<Value> raw_optional;
thread_local Stack raw_stack;
thread_local Value raw_a = 0, raw_b = 0, raw_c = 0, raw_d = 0;
}  // namespace

BENCH_OPAQUE void RawTls::ensure() { raw_value = 1; }
BENCH_OPAQUE Value* RawTls::get() { return &raw_value; }
BENCH_OPAQUE void RawTls::replace(Value v) { raw_value = v; }
BENCH_OPAQUE void RawTls::make() { raw_optional.emplace(0); }
BENCH_OPAQUE void RawTls::reset() { raw_optional.reset(); }
BENCH_OPAQUE void RawTls::ensure_stack() { raw_stack.reserve(16); }
BENCH_OPAQUE void RawTls::push(Value v) { raw_stack.push_back(v); }
BENCH_OPAQUE Value RawTls::pop() {
    if (raw_stack.empty()) return -1;
    const Value v = raw_stack.back();
    raw_stack.pop_back();
    return v;
}
BENCH_OPAQUE Value* RawTls::top() { return raw_stack.empty() ? nullptr : &raw_stack.back(); }
BENCH_OPAQUE void RawTls::set4() {
    raw_a = 1;
    raw_b = 2;
    raw_c = 3;
    raw_d = 4;
}

// ---------------------------------------------------------------------------------------------------
// ctxlocal
namespace {
ctxlocal::Local<Value> ctx_value;
ctxlocal::Local<Value> ctx_made;
ctxlocal::LocalStack<Value> ctx_stack;
ctxlocal::Local<Value> ctx_a, ctx_b, ctx_c, ctx_d;
ctxlocal::Local<Value> ctx_each;
}  // namespace

struct Ctx::Many {
    explicit Many(std::size_t n) : locals(new ctxlocal::Local<Value>[n]) {}
    std::unique_ptr<ctxlocal::Local<Value>[]> locals;
};

BENCH_OPAQUE void Ctx::ensure() { ctx_value.value() = 1; }
BENCH_OPAQUE Value* Ctx::get() { return ctx_value.get(); }
BENCH_OPAQUE void Ctx::replace(Value v) { ctx_value.emplace(v); }
BENCH_OPAQUE void Ctx::make() { ctx_made.value(); }
BENCH_OPAQUE void Ctx::reset() { ctx_made.reset(); }
BENCH_OPAQUE void Ctx::ensure_stack() {
    for (int i = 0; i < 16; ++i) ctx_stack.push(i);
    while (ctx_stack.pop()) {
    }
}
BENCH_OPAQUE void Ctx::push(Value v) { ctx_stack.push(v); }
BENCH_OPAQUE Value Ctx::pop() { return ctx_stack.pop().value_or(-1); }
BENCH_OPAQUE Value* Ctx::top() { return ctx_stack.top(); }
BENCH_OPAQUE void Ctx::set4() {
    ctx_a.value() = 1;
    ctx_b.value() = 2;
    ctx_c.value() = 3;
    ctx_d.value() = 4;
}
BENCH_OPAQUE void Ctx::lifecycle() {
    ctxlocal::Local<Value> l;
    l.value() = 1;
}
std::shared_ptr<Ctx::Many> Ctx::many(std::size_t n) { return std::make_shared<Many>(n); }
BENCH_OPAQUE Value& Ctx::first_use(Many& m, std::size_t i) { return m.locals[i].value(); }
BENCH_OPAQUE long Ctx::sum_all() {
    long sum = 0;
    ctx_each.for_each([&](Value& v) { sum += v; });
    return sum;
}
BENCH_OPAQUE void Ctx::ensure_each() { ctx_each.value() = 1; }

// ---------------------------------------------------------------------------------------------------
// pthread_getspecific
namespace {
pthread_key_t make_key(void (*destroy)(void*)) {
    pthread_key_t k;
    if (pthread_key_create(&k, destroy) != 0) std::abort();
    return k;
}
void delete_value(void* p) { delete static_cast<Value*>(p); }
void delete_stack(void* p) { delete static_cast<Stack*>(p); }
const pthread_key_t pt_value = make_key(&delete_value);
const pthread_key_t pt_made = make_key(&delete_value);
const pthread_key_t pt_stack = make_key(&delete_stack);
const pthread_key_t pt_a = make_key(&delete_value), pt_b = make_key(&delete_value),
                    pt_c = make_key(&delete_value), pt_d = make_key(&delete_value);

Value* pt_get(pthread_key_t k) { return static_cast<Value*>(pthread_getspecific(k)); }
Stack& pt_stack_value() {
    auto* s = static_cast<Stack*>(pthread_getspecific(pt_stack));
    if (s == nullptr) {
        s = new Stack();
        pthread_setspecific(pt_stack, s);
    }
    return *s;
}
void pt_set(pthread_key_t k, Value v) {
    Value* p = pt_get(k);
    if (p == nullptr) {
        pthread_setspecific(k, new Value(v));
    } else {
        *p = v;
    }
}
}  // namespace

struct Pthread::Many {
    explicit Many(std::size_t n) : keys(n) {
        for (auto& k : keys) k = make_key(&delete_value);
    }
    ~Many() {
        // pthread_key_delete runs no destructor: release the calling thread's values by hand (other
        // threads' values would leak; the benchmark only uses its own).
        for (auto k : keys) {
            delete pt_get(k);
            pthread_key_delete(k);
        }
    }
    std::vector<pthread_key_t> keys;
};

BENCH_OPAQUE void Pthread::ensure() { pt_set(pt_value, 1); }
BENCH_OPAQUE Value* Pthread::get() { return pt_get(pt_value); }
BENCH_OPAQUE void Pthread::replace(Value v) {
    Value* old = pt_get(pt_value);
    pthread_setspecific(pt_value, new Value(v));
    delete old;
}
BENCH_OPAQUE void Pthread::make() {
    if (pt_get(pt_made) == nullptr) pthread_setspecific(pt_made, new Value(0));
}
BENCH_OPAQUE void Pthread::reset() {
    delete pt_get(pt_made);
    pthread_setspecific(pt_made, nullptr);
}
BENCH_OPAQUE void Pthread::ensure_stack() { pt_stack_value().reserve(16); }
BENCH_OPAQUE void Pthread::push(Value v) { pt_stack_value().push_back(v); }
BENCH_OPAQUE Value Pthread::pop() {
    auto* s = static_cast<Stack*>(pthread_getspecific(pt_stack));
    if (s == nullptr || s->empty()) return -1;
    const Value v = s->back();
    s->pop_back();
    return v;
}
BENCH_OPAQUE Value* Pthread::top() {
    auto* s = static_cast<Stack*>(pthread_getspecific(pt_stack));
    return s == nullptr || s->empty() ? nullptr : &s->back();
}
BENCH_OPAQUE void Pthread::set4() {
    pt_set(pt_a, 1);
    pt_set(pt_b, 2);
    pt_set(pt_c, 3);
    pt_set(pt_d, 4);
}
BENCH_OPAQUE void Pthread::lifecycle() {
    const pthread_key_t k = make_key(&delete_value);
    pthread_setspecific(k, new Value(1));
    delete pt_get(k);  // pthread_key_delete destroys nothing: the caller must (other threads' values leak)
    pthread_key_delete(k);
}
std::shared_ptr<Pthread::Many> Pthread::many(std::size_t n) { return std::make_shared<Many>(n); }
BENCH_OPAQUE Value& Pthread::first_use(Many& m, std::size_t i) {
    const pthread_key_t k = m.keys[i];
    Value* p = pt_get(k);
    if (p == nullptr) {
        p = new Value(0);
        pthread_setspecific(k, p);
    }
    return *p;
}

// ---------------------------------------------------------------------------------------------------
// boost::thread_specific_ptr
namespace {
boost::thread_specific_ptr<Value> bt_value;
boost::thread_specific_ptr<Value> bt_made;
boost::thread_specific_ptr<Stack> bt_stack;
boost::thread_specific_ptr<Value> bt_a, bt_b, bt_c, bt_d;

Stack& bt_stack_value() {
    Stack* s = bt_stack.get();
    if (s == nullptr) {
        s = new Stack();
        bt_stack.reset(s);
    }
    return *s;
}
void bt_set(boost::thread_specific_ptr<Value>& p, Value v) {
    if (p.get() == nullptr) {
        p.reset(new Value(v));
    } else {
        *p = v;
    }
}
}  // namespace

struct BoostTss::Many {
    explicit Many(std::size_t n) : ptrs(new boost::thread_specific_ptr<Value>[n]) {}
    std::unique_ptr<boost::thread_specific_ptr<Value>[]> ptrs;
};

BENCH_OPAQUE void BoostTss::ensure() { bt_set(bt_value, 1); }
BENCH_OPAQUE Value* BoostTss::get() { return bt_value.get(); }
BENCH_OPAQUE void BoostTss::replace(Value v) { bt_value.reset(new Value(v)); }
BENCH_OPAQUE void BoostTss::make() {
    if (bt_made.get() == nullptr) bt_made.reset(new Value(0));
}
BENCH_OPAQUE void BoostTss::reset() { bt_made.reset(); }
BENCH_OPAQUE void BoostTss::ensure_stack() { bt_stack_value().reserve(16); }
BENCH_OPAQUE void BoostTss::push(Value v) { bt_stack_value().push_back(v); }
BENCH_OPAQUE Value BoostTss::pop() {
    Stack* s = bt_stack.get();
    if (s == nullptr || s->empty()) return -1;
    const Value v = s->back();
    s->pop_back();
    return v;
}
BENCH_OPAQUE Value* BoostTss::top() {
    Stack* s = bt_stack.get();
    return s == nullptr || s->empty() ? nullptr : &s->back();
}
BENCH_OPAQUE void BoostTss::set4() {
    bt_set(bt_a, 1);
    bt_set(bt_b, 2);
    bt_set(bt_c, 3);
    bt_set(bt_d, 4);
}
BENCH_OPAQUE void BoostTss::lifecycle() {
    boost::thread_specific_ptr<Value> p;  // its destructor releases only the calling thread's value
    p.reset(new Value(1));
}
std::shared_ptr<BoostTss::Many> BoostTss::many(std::size_t n) { return std::make_shared<Many>(n); }
BENCH_OPAQUE Value& BoostTss::first_use(Many& m, std::size_t i) {
    auto& p = m.ptrs[i];
    if (p.get() == nullptr) p.reset(new Value(0));
    return *p;
}

// ---------------------------------------------------------------------------------------------------
// tbb::enumerable_thread_specific
namespace {
tbb::enumerable_thread_specific<Value> tb_value;
tbb::enumerable_thread_specific<std::optional<Value>> tb_made;
tbb::enumerable_thread_specific<Stack> tb_stack;
tbb::enumerable_thread_specific<Value> tb_a, tb_b, tb_c, tb_d;
tbb::enumerable_thread_specific<Value> tb_each;
}  // namespace

struct TbbEts::Many {
    explicit Many(std::size_t n) : sets(new tbb::enumerable_thread_specific<Value>[n]) {}
    std::unique_ptr<tbb::enumerable_thread_specific<Value>[]> sets;
};

BENCH_OPAQUE void TbbEts::ensure() { tb_value.local() = 1; }
BENCH_OPAQUE Value* TbbEts::get() { return &tb_value.local(); }
BENCH_OPAQUE void TbbEts::replace(Value v) { tb_value.local() = v; }
BENCH_OPAQUE void TbbEts::make() { tb_made.local().emplace(0); }
BENCH_OPAQUE void TbbEts::reset() { tb_made.local().reset(); }
BENCH_OPAQUE void TbbEts::ensure_stack() { tb_stack.local().reserve(16); }
BENCH_OPAQUE void TbbEts::push(Value v) { tb_stack.local().push_back(v); }
BENCH_OPAQUE Value TbbEts::pop() {
    Stack& s = tb_stack.local();
    if (s.empty()) return -1;
    const Value v = s.back();
    s.pop_back();
    return v;
}
BENCH_OPAQUE Value* TbbEts::top() {
    Stack& s = tb_stack.local();
    return s.empty() ? nullptr : &s.back();
}
BENCH_OPAQUE void TbbEts::set4() {
    tb_a.local() = 1;
    tb_b.local() = 2;
    tb_c.local() = 3;
    tb_d.local() = 4;
}
BENCH_OPAQUE void TbbEts::lifecycle() {
    tbb::enumerable_thread_specific<Value> e;
    e.local() = 1;
}
std::shared_ptr<TbbEts::Many> TbbEts::many(std::size_t n) { return std::make_shared<Many>(n); }
BENCH_OPAQUE Value& TbbEts::first_use(Many& m, std::size_t i) { return m.sets[i].local(); }
BENCH_OPAQUE long TbbEts::sum_all() {
    long sum = 0;
    for (Value v : tb_each) sum += v;
    return sum;
}
BENCH_OPAQUE void TbbEts::ensure_each() { tb_each.local() = 1; }
void TbbEts::clear_each() { tb_each.clear(); }

// ---------------------------------------------------------------------------------------------------
// std::unordered_map<std::thread::id, T> + std::mutex
namespace {
template <class T>
struct LockedMap {
    std::mutex mutex;
    std::unordered_map<std::thread::id, T> map;
};
LockedMap<Value> mm_value;
LockedMap<Value> mm_made;
LockedMap<Stack> mm_stack;
LockedMap<Value> mm_a, mm_b, mm_c, mm_d;
LockedMap<Value> mm_each;

template <class T>
T& mm_slot(LockedMap<T>& m) {
    std::lock_guard<std::mutex> g(m.mutex);
    return m.map[std::this_thread::get_id()];  // nodes are stable: the reference survives rehashing
}
void mm_set(LockedMap<Value>& m, Value v) { mm_slot(m) = v; }
void mm_erase(LockedMap<Value>& m) {
    std::lock_guard<std::mutex> g(m.mutex);
    m.map.erase(std::this_thread::get_id());
}
}  // namespace

struct MutexMap::Many {
    explicit Many(std::size_t n) : maps(new LockedMap<Value>[n]) {}
    std::unique_ptr<LockedMap<Value>[]> maps;
};

BENCH_OPAQUE void MutexMap::ensure() { mm_set(mm_value, 1); }
BENCH_OPAQUE Value* MutexMap::get() {
    std::lock_guard<std::mutex> g(mm_value.mutex);
    auto it = mm_value.map.find(std::this_thread::get_id());
    return it == mm_value.map.end() ? nullptr : &it->second;
}
BENCH_OPAQUE void MutexMap::replace(Value v) { mm_set(mm_value, v); }
BENCH_OPAQUE void MutexMap::make() {
    std::lock_guard<std::mutex> g(mm_made.mutex);
    mm_made.map.emplace(std::this_thread::get_id(), 0);
}
BENCH_OPAQUE void MutexMap::reset() { mm_erase(mm_made); }
BENCH_OPAQUE void MutexMap::ensure_stack() { mm_slot(mm_stack).reserve(16); }
BENCH_OPAQUE void MutexMap::push(Value v) {
    std::lock_guard<std::mutex> g(mm_stack.mutex);
    mm_stack.map[std::this_thread::get_id()].push_back(v);
}
BENCH_OPAQUE Value MutexMap::pop() {
    std::lock_guard<std::mutex> g(mm_stack.mutex);
    auto it = mm_stack.map.find(std::this_thread::get_id());
    if (it == mm_stack.map.end() || it->second.empty()) return -1;
    const Value v = it->second.back();
    it->second.pop_back();
    return v;
}
BENCH_OPAQUE Value* MutexMap::top() {
    std::lock_guard<std::mutex> g(mm_stack.mutex);
    auto it = mm_stack.map.find(std::this_thread::get_id());
    return it == mm_stack.map.end() || it->second.empty() ? nullptr : &it->second.back();
}
BENCH_OPAQUE void MutexMap::set4() {
    mm_set(mm_a, 1);
    mm_set(mm_b, 2);
    mm_set(mm_c, 3);
    mm_set(mm_d, 4);
    // Nothing erases a thread's entries at exit: the thread must.
    mm_erase(mm_a);
    mm_erase(mm_b);
    mm_erase(mm_c);
    mm_erase(mm_d);
}
BENCH_OPAQUE void MutexMap::lifecycle() {
    LockedMap<Value> m;
    mm_set(m, 1);
}
std::shared_ptr<MutexMap::Many> MutexMap::many(std::size_t n) { return std::make_shared<Many>(n); }
BENCH_OPAQUE Value& MutexMap::first_use(Many& m, std::size_t i) { return mm_slot(m.maps[i]); }
BENCH_OPAQUE long MutexMap::sum_all() {
    std::lock_guard<std::mutex> g(mm_each.mutex);
    long sum = 0;
    for (const auto& kv : mm_each.map) sum += kv.second;
    return sum;
}
BENCH_OPAQUE void MutexMap::ensure_each() { mm_set(mm_each, 1); }
void MutexMap::clear_each() {
    std::lock_guard<std::mutex> g(mm_each.mutex);
    mm_each.map.clear();
}

// ---------------------------------------------------------------------------------------------------
// proxies
namespace {
thread_local Obj raw_obj;
thread_local Obj* raw_obj_pointer = nullptr;
ctxlocal::Local<Obj> px_local;
ctxlocal::LocalStack<Obj> px_stack;
ctxlocal::Local<Obj*> px_pointer;
ctxlocal::LocalProxy<Obj> proxy_local{px_local, "no Obj in the Local"};
ctxlocal::LocalProxy<Obj> proxy_stack{px_stack, "no Obj on the stack"};
ctxlocal::LocalProxy<Obj> proxy_pointer{px_pointer, "no Obj* in the Local"};
}  // namespace

BENCH_OPAQUE void proxy::ensure() {
    raw_obj_pointer = &raw_obj;
    px_local.value().field = 1;
    if (px_stack.empty()) px_stack.push(Obj{});
    px_pointer.value() = &raw_obj;
}
BENCH_OPAQUE long proxy::raw_pointer() { return raw_obj_pointer->field; }
BENCH_OPAQUE long proxy::local_get() { return px_local.get()->field; }
BENCH_OPAQUE long proxy::over_local() { return proxy_local->field; }
BENCH_OPAQUE long proxy::over_stack() { return proxy_stack->field; }
BENCH_OPAQUE long proxy::over_local_pointer() { return proxy_pointer->field; }

}  // namespace bench
