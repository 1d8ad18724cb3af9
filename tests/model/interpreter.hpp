// Model-based checking of ctxlocal: an interpreter that runs a sequence of operations on real Locals,
// LocalStacks, a LocalManager and Flask-style contexts over several worker threads, and checks every step
// against a plain reference model (std::map / std::vector per thread).
//
// Shared by tests/model_test.cpp (random sequences from a seed, with shrinking) and
// tests/fuzz/fuzz_model.cpp (sequences decoded from libFuzzer's bytes).
//
// Determinism: the worker threads run in lockstep. The interpreter hands a run of consecutive operations
// for one thread to that thread and waits until it reports back; thread start and exit are done by the
// interpreter (spawn / join). The interleaving is therefore the operation sequence itself, and a failing
// sequence reproduces exactly.
//
// Exactness: every value is a Tracked, whose serial is registered in a ledger on construction and
// removed on destruction (moves transfer the serial; a moved-from object owns none). After every
// operation the interpreter checks that exactly the values the model says die died, each on the thread
// the model says (thread exit: the exiting thread; Local destruction: the destroying thread), that no
// serial died twice, and that the number of live values equals the model's (the whole live set is
// compared every 64 operations and at the end).
#pragma once

#include <ctxlocal/ctxlocal.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

namespace ctxmodel {

/// When set, the initialisers of the model's Locals throw InjectedError.
inline thread_local bool tl_init_throws = false;

/// The exception every injected failure throws.
struct InjectedError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// Every live Tracked serial, and which serials died on which worker since the last drain.
class Ledger {
public:
    static Ledger& instance() {
        static Ledger* ledger = new Ledger();  // never destroyed: values may die at thread exit late
        return *ledger;
    }
    std::uint64_t born() {
        std::lock_guard<std::mutex> lock(mutex_);
        const std::uint64_t serial = next_++;
        live_.insert(serial);
        return serial;
    }
    void died(std::uint64_t serial) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (live_.erase(serial) == 0) {
            errors_.push_back("value #" + std::to_string(serial) + " destroyed twice (or never constructed)");
        }
        // Which worker: looked up by thread id, not kept in a thread_local, which mingw-w64's emulated TLS
        // may have reset when a value dies at thread exit (docs/platforms.md).
        const auto worker = workers_.find(std::this_thread::get_id());
        destroyed_.emplace_back(serial, worker != workers_.end() ? worker->second : -1);
    }
    /// The calling thread is worker `index` (-1 for the interpreter's own thread).
    void set_worker(int index) {
        std::lock_guard<std::mutex> lock(mutex_);
        workers_[std::this_thread::get_id()] = index;
    }
    void reset() {
        std::lock_guard<std::mutex> lock(mutex_);
        live_.clear();
        destroyed_.clear();
        errors_.clear();
    }
    std::uint64_t next() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return next_;
    }
    std::size_t live_count() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return live_.size();
    }
    std::vector<std::uint64_t> live_sorted() const {
        std::lock_guard<std::mutex> lock(mutex_);
        std::vector<std::uint64_t> out(live_.begin(), live_.end());
        std::sort(out.begin(), out.end());
        return out;
    }
    std::vector<std::pair<std::uint64_t, int>> drain_destroyed() {
        std::lock_guard<std::mutex> lock(mutex_);
        std::vector<std::pair<std::uint64_t, int>> out;
        out.swap(destroyed_);
        std::sort(out.begin(), out.end());
        return out;
    }
    std::vector<std::string> drain_errors() {
        std::lock_guard<std::mutex> lock(mutex_);
        std::vector<std::string> out;
        out.swap(errors_);
        return out;
    }

private:
    mutable std::mutex mutex_;
    std::uint64_t next_ = 1;
    std::unordered_set<std::uint64_t> live_;
    std::vector<std::pair<std::uint64_t, int>> destroyed_;
    std::vector<std::string> errors_;
    std::map<std::thread::id, int> workers_;
};

/// A value with an identity: a unique serial registered in the Ledger for exactly its lifetime.
struct Tracked {
    std::uint64_t serial = 0;  // 0: moved-from, owns no identity
    int payload = 0;

    Tracked() : serial(Ledger::instance().born()) {}
    explicit Tracked(int p, bool fail = false) : payload(p) {
        if (fail) throw InjectedError("Tracked(" + std::to_string(p) + ") constructor failed");
        serial = Ledger::instance().born();
    }
    Tracked(const Tracked& other) : serial(Ledger::instance().born()), payload(other.payload) {}
    Tracked(Tracked&& other) noexcept : serial(other.serial), payload(other.payload) { other.serial = 0; }
    Tracked& operator=(const Tracked&) = delete;
    Tracked& operator=(Tracked&&) = delete;
    ~Tracked() {
        if (serial != 0) Ledger::instance().died(serial);
    }
};

// ---------------------------------------------------------------------------------------------------
// Operations.

enum class Kind : std::uint8_t {
    local_create,     // a: slot, b: initialiser mode/payload
    local_destroy,    // a: slot
    get,              // a: slot
    value,            // a: slot, b&1: initialiser throws
    emplace,          // a: slot, b>>1: payload, b&1: constructor throws
    mutate,           // a: slot, b: new payload
    reset,            // a: slot
    count,            // a: slot
    for_each,         // a: slot, b&1: add 1 to every visited payload
    stack_push,       // a: stack, b&3: push / emplace / throwing emplace / push a copy; b>>2: payload
    stack_pop,        // a: stack
    stack_top,        // a: stack
    stack_clear,      // a: stack
    manager_cleanup,  // a LocalManager over every Local and LocalStack
    push_app,         // a: AppContext
    push_request,     // a: RequestContext
    pop_app,          // a: AppContext (may be the wrong one), b: teardown throw mask
    pop_request,      // a: RequestContext (may be the wrong one), b: teardown throw mask
    pop_top,          // pops the active context, b: teardown throw mask
    g_set,            // b: payload
    g_get,            //
    thread_start,     //
    thread_exit,      //
    kind_count
};

inline const char* kind_name(Kind k) {
    static const char* const names[] = {
        "local_create", "local_destroy",   "get",      "value",        "emplace",    "mutate",
        "reset",        "count",           "for_each", "stack_push",   "stack_pop",  "stack_top",
        "stack_clear",  "manager_cleanup", "push_app", "push_request", "pop_app",    "pop_request",
        "pop_top",      "g_set",           "g_get",    "thread_start", "thread_exit"};
    const auto i = static_cast<std::size_t>(k);
    return i < sizeof names / sizeof names[0] ? names[i] : "?";
}

struct Op {
    Kind kind;
    std::uint8_t thread;  // taken modulo the number of workers
    std::uint8_t a;
    std::uint8_t b;
    friend bool operator==(const Op& x, const Op& y) {
        return x.kind == y.kind && x.thread == y.thread && x.a == y.a && x.b == y.b;
    }
};

inline constexpr int local_slots = 4;
inline constexpr int stack_slots = 2;
inline constexpr int app_contexts = 3;      // for apps 0, 1, 0
inline constexpr int request_contexts = 3;  // for apps 0, 1, 0
inline constexpr int max_threads = 8;

inline std::string describe(const Op& op, int threads) {
    std::ostringstream out;
    out << "t" << op.thread % threads << " " << kind_name(op.kind) << " a=" << int(op.a)
        << " b=" << int(op.b);
    return out.str();
}
inline std::string describe(const std::vector<Op>& ops, int threads) {
    std::string out;
    for (std::size_t i = 0; i < ops.size(); ++i)
        out += "  [" + std::to_string(i) + "] " + describe(ops[i], threads) + "\n";
    return out;
}

/// Random operations from `seed`, biased towards useful sequences: a thread usually keeps running a few
/// operations in a row, operations on a missing Local become its creation, exits and destructions are
/// rare, and most pops are right.
inline std::vector<Op> generate(std::uint64_t seed, std::size_t n, int threads) {
    std::mt19937_64 rng(seed);
    auto pick = [&](unsigned bound) { return static_cast<unsigned>(rng() % bound); };
    struct Weighted {
        Kind kind;
        unsigned weight;
    };
    static const Weighted table[] = {
        {Kind::local_destroy, 2},   {Kind::get, 8},          {Kind::value, 10},       {Kind::emplace, 8},
        {Kind::mutate, 5},          {Kind::reset, 5},        {Kind::count, 3},        {Kind::for_each, 3},
        {Kind::stack_push, 8},      {Kind::stack_pop, 6},    {Kind::stack_top, 3},    {Kind::stack_clear, 1},
        {Kind::manager_cleanup, 1}, {Kind::push_app, 4},     {Kind::push_request, 5}, {Kind::pop_app, 2},
        {Kind::pop_request, 2},     {Kind::pop_top, 7},      {Kind::g_set, 4},        {Kind::g_get, 3},
        {Kind::thread_exit, 1},     {Kind::thread_start, 1},
    };
    unsigned total = 0;
    for (const Weighted& w : table) total += w.weight;
    bool slot_alive[local_slots] = {};
    std::vector<Op> ops;
    ops.reserve(n);
    unsigned thread = 0;
    while (ops.size() < n) {
        if (pick(10) >= 7) thread = pick(static_cast<unsigned>(threads));
        unsigned r = pick(total);
        Kind kind = Kind::get;
        for (const Weighted& w : table) {
            if (r < w.weight) {
                kind = w.kind;
                break;
            }
            r -= w.weight;
        }
        Op op{kind, static_cast<std::uint8_t>(thread), static_cast<std::uint8_t>(pick(256)),
              static_cast<std::uint8_t>(pick(256))};
        switch (kind) {
            case Kind::local_destroy:
            case Kind::get:
            case Kind::value:
            case Kind::emplace:
            case Kind::mutate:
            case Kind::reset:
            case Kind::count:
            case Kind::for_each: {
                const int slot = op.a % local_slots;
                if (!slot_alive[slot]) {
                    op.kind = Kind::local_create;
                    slot_alive[slot] = true;
                } else if (kind == Kind::local_destroy) {
                    slot_alive[slot] = false;
                }
                break;
            }
            default:
                break;
        }
        if (op.kind == Kind::value || op.kind == Kind::emplace) {
            if (pick(8) != 0) op.b &= 0xFE;  // throwing initialisers/constructors: 1 in 16
        }
        if (op.kind == Kind::stack_push && (op.b & 3) == 2 && pick(4) != 0) op.b &= 0xFC;
        if (op.kind == Kind::pop_app || op.kind == Kind::pop_request || op.kind == Kind::pop_top) {
            if (pick(4) != 0) op.b = 0;  // throwing teardown in 1 of 4 pops
        }
        ops.push_back(op);
    }
    return ops;
}

/// Operations decoded from bytes (the fuzzer): 4 bytes per operation.
inline std::vector<Op> decode(const std::uint8_t* data, std::size_t size, std::size_t max_ops) {
    std::vector<Op> ops;
    for (std::size_t i = 0; i + 4 <= size && ops.size() < max_ops; i += 4) {
        ops.push_back(Op{static_cast<Kind>(data[i] % static_cast<unsigned>(Kind::kind_count)), data[i + 1],
                         data[i + 2], data[i + 3]});
    }
    return ops;
}

// ---------------------------------------------------------------------------------------------------
// The contexts under test.

struct ModelApp : ctxlocal::AppHooks {
    int id = 0;
};
struct ModelRequest {
    int id = 0;
};
using Web = ctxlocal::Contexts<ModelApp, ModelRequest>;

/// What a teardown callback saw.
struct TeardownRecord {
    int callback;  // 0 r1, 1 r2, 2 a1, 3 a2
    int app;
    std::size_t app_depth;
    std::size_t request_depth;
    const void* current_app;
    const void* request;
    bool got_error;
    friend bool operator==(const TeardownRecord& x, const TeardownRecord& y) {
        return x.callback == y.callback && x.app == y.app && x.app_depth == y.app_depth &&
               x.request_depth == y.request_depth && x.current_app == y.current_app &&
               x.request == y.request && x.got_error == y.got_error;
    }
};

/// Where teardown callbacks report, and which of them throw. Used only in lockstep.
struct TeardownSink {
    std::vector<TeardownRecord> records;
    unsigned throw_mask = 0;  // bit i: callback i throws
};
inline TeardownSink* active_sink = nullptr;

inline const char* callback_name(int i) {
    static const char* const names[] = {"r1", "r2", "a1", "a2"};
    return names[i];
}

/// The two applications, each with request callbacks r1, r2 and app callbacks a1, a2 (registered once,
/// before any use, as AppHooks requires).
inline ModelApp* model_apps() {
    static ModelApp* apps = [] {
        auto* made = new ModelApp[2];
        for (int id = 0; id < 2; ++id) {
            made[id].id = id;
            for (int cb = 0; cb < 4; ++cb) {
                auto fn = [id, cb](std::exception_ptr error) {
                    TeardownSink* sink = active_sink;
                    if (sink == nullptr) return;
                    sink->records.push_back(
                        TeardownRecord{cb, id, Web::app_context_depth(), Web::request_context_depth(),
                                       Web::current_app.get(), Web::request.get(), error != nullptr});
                    if ((sink->throw_mask >> cb) & 1u) {
                        throw InjectedError(std::string("teardown ") + callback_name(cb) + " app" +
                                            std::to_string(id));
                    }
                };
                if (cb < 2) {
                    made[id].teardown_request(fn);
                } else {
                    made[id].teardown_appcontext(fn);
                }
            }
        }
        return made;
    }();
    return apps;
}

// ---------------------------------------------------------------------------------------------------
// The interpreter.

/// Faults the interpreter can inject into its own real side, to prove that the checks catch a defect.
enum class Fault { none, skip_reset, read_other_thread };

struct Result {
    bool ok = true;
    std::string message;
    std::size_t failed_at = 0;  // index of the failing operation (ops.size() for the final checks)
    std::size_t executed = 0;   // operations applied (not skipped as inapplicable)
};

class Interpreter {
public:
    explicit Interpreter(int threads, Fault fault = Fault::none)
        : threads_(threads < 1             ? 1
                   : threads > max_threads ? max_threads
                                           : threads),
          fault_(fault) {
        ModelApp* apps = model_apps();
        for (int i = 0; i < app_contexts; ++i)
            app_ctx_.push_back(std::make_unique<Web::AppContext>(apps[i % 2]));
        for (int i = 0; i < request_contexts; ++i) {
            req_ctx_.push_back(std::make_unique<Web::RequestContext>(apps[i % 2], ModelRequest{i}));
        }
        for (int i = 0; i < stack_slots; ++i) stacks_[i] = std::make_unique<ctxlocal::LocalStack<Tracked>>();
        model_.resize(static_cast<std::size_t>(threads_));
        workers_.resize(static_cast<std::size_t>(threads_));
    }
    Interpreter(const Interpreter&) = delete;
    Interpreter& operator=(const Interpreter&) = delete;
    ~Interpreter() { shutdown(); }

    /// Runs `ops`, checking every step; stops at the first mismatch.
    Result run(const std::vector<Op>& ops) {
        Ledger::instance().reset();
        TeardownSink sink;
        active_sink = &sink;
        sink_ = &sink;
        ops_ = &ops;
        std::size_t i = 0;
        while (i < ops.size() && result_.ok) {
            const Op& op = ops[i];
            const int t = op.thread % threads_;
            if (op.kind == Kind::thread_start) {
                if (!model_[t].alive) {
                    start(t);
                    ++result_.executed;
                }
                ++i;
                continue;
            }
            if (op.kind == Kind::thread_exit) {
                if (model_[t].alive) {
                    exit_thread(t, i);
                    ++result_.executed;
                }
                ++i;
                continue;
            }
            if (!model_[t].alive) start(t);
            std::size_t j = i;
            while (j < ops.size() && ops[j].thread % threads_ == t && ops[j].kind != Kind::thread_start &&
                   ops[j].kind != Kind::thread_exit) {
                ++j;
            }
            workers_[t]->run(this, i, j);
            i = j;
        }
        if (result_.ok) {
            for (int t = 0; t < threads_ && result_.ok; ++t) {
                if (model_[t].alive) exit_thread(t, ops.size());
            }
        }
        if (result_.ok) final_checks(ops.size());
        shutdown();
        if (result_.ok) {
            std::vector<std::string> errors = Ledger::instance().drain_errors();
            const std::size_t leaked = Ledger::instance().live_count();
            if (!errors.empty()) fail(ops.size(), "after teardown: " + errors.front());
            if (leaked != 0) fail(ops.size(), "after teardown: " + std::to_string(leaked) + " values leaked");
        }
        active_sink = nullptr;
        return result_;
    }

private:
    struct Value {
        std::uint64_t serial;
        int payload;
    };
    struct Frame {
        bool request;
        int ctx;  // index of the AppContext / RequestContext; -1 for an implicit app frame
        int app;  // 0 or 1
        bool pushed_app;
        int depth;
        std::size_t g_home;  // app frames: index of the frame whose g this one uses
        std::optional<Value> g;
    };
    struct ThreadModel {
        bool alive = false;
        std::map<int, Value> locals;  // by slot
        std::vector<Value> stacks[stack_slots];
        std::vector<Frame> frames;
    };
    struct LocalModel {
        bool alive = false;
        int mode = 0;  // 0: T{}, 1: function pointer initialiser, 2: initialiser with state
        int init_payload = 0;
    };
    using Deaths = std::vector<std::pair<std::uint64_t, int>>;

    class Worker {
    public:
        explicit Worker(int index) : thread_([this, index] { loop(index); }) {}
        Worker(const Worker&) = delete;
        Worker& operator=(const Worker&) = delete;
        /// Runs ops [begin, end) on this worker and waits until it is done.
        void run(Interpreter* interpreter, std::size_t begin, std::size_t end) {
            std::unique_lock<std::mutex> lock(mutex_);
            interpreter_ = interpreter;
            begin_ = begin;
            end_ = end;
            busy_ = true;
            cv_.notify_all();
            cv_.wait(lock, [&] { return !busy_; });
        }
        /// Lets the thread return and joins it (its values are destroyed before join returns).
        void exit() {
            {
                std::lock_guard<std::mutex> lock(mutex_);
                quit_ = true;
            }
            cv_.notify_all();
            thread_.join();
        }

    private:
        void loop(int index) {
            Ledger::instance().set_worker(index);
            std::unique_lock<std::mutex> lock(mutex_);
            for (;;) {
                cv_.wait(lock, [&] { return busy_ || quit_; });
                if (busy_) {
                    lock.unlock();
                    interpreter_->execute_range(index, begin_, end_);
                    lock.lock();
                    busy_ = false;
                    cv_.notify_all();
                } else {
                    return;
                }
            }
        }

        std::mutex mutex_;
        std::condition_variable cv_;
        Interpreter* interpreter_ = nullptr;
        std::size_t begin_ = 0, end_ = 0;
        bool busy_ = false;
        bool quit_ = false;
        std::thread thread_;
    };

    void start(int t) {
        workers_[t] = std::make_unique<Worker>(t);
        model_[t] = ThreadModel{};
        model_[t].alive = true;
    }

    void exit_thread(int t, std::size_t at) {
        Deaths expected;
        ThreadModel& m = model_[t];
        for (auto& [slot, v] : m.locals) expected.emplace_back(v.serial, t);
        for (auto& s : m.stacks) {
            for (const Value& v : s) expected.emplace_back(v.serial, t);
        }
        for (const Frame& f : m.frames) {
            if (f.g) expected.emplace_back(f.g->serial, t);
        }
        workers_[t]->exit();
        workers_[t].reset();
        m = ThreadModel{};
        // A thread that exits with contexts pushed destroys them without teardown.
        if (!sink_->records.empty()) {
            fail(at, "thread exit of t" + std::to_string(t) + " ran a teardown callback");
            return;
        }
        check_deaths(at, expected, "thread exit of t" + std::to_string(t));
        check_live_count(at);
        if (result_.ok) check_live_set(at);
    }

    void shutdown() {
        for (int t = 0; t < threads_; ++t) {
            if (workers_[t]) {
                workers_[t]->exit();
                workers_[t].reset();
                model_[t] = ThreadModel{};
            }
        }
        for (auto& l : locals_) l.reset();
        for (auto& s : stacks_) s.reset();
        req_ctx_.clear();
        app_ctx_.clear();
    }

    void final_checks(std::size_t at) {
        for (int slot = 0; slot < local_slots && result_.ok; ++slot) {
            if (locals_[slot] && locals_[slot]->count() != 0)
                fail(at, "a Local still has values after every thread exited");
        }
        check_live_set(at);
    }

    // ---- checking helpers ----

    void fail(std::size_t at, const std::string& message) {
        if (!result_.ok) return;
        result_.ok = false;
        result_.failed_at = at;
        std::string where = at < ops_->size()
                                ? "operation [" + std::to_string(at) + "] " + describe((*ops_)[at], threads_)
                                : std::string("final checks");
        result_.message = where + ": " + message;
    }

    static std::string show(const Deaths& d) {
        std::string out = "{";
        for (const auto& [serial, t] : d) out += " #" + std::to_string(serial) + "@t" + std::to_string(t);
        return out + " }";
    }

    void check_deaths(std::size_t at, Deaths expected, const std::string& what) {
        std::sort(expected.begin(), expected.end());
        const Deaths actual = Ledger::instance().drain_destroyed();
        if (actual != expected)
            fail(at, what + ": destroyed " + show(actual) + ", expected " + show(expected));
        std::vector<std::string> errors = Ledger::instance().drain_errors();
        if (!errors.empty()) fail(at, what + ": " + errors.front());
    }

    std::size_t model_live() const {
        std::size_t n = 0;
        for (const ThreadModel& m : model_) {
            n += m.locals.size();
            for (const auto& s : m.stacks) n += s.size();
            for (const Frame& f : m.frames) n += f.g ? 1 : 0;
        }
        return n;
    }

    void check_live_count(std::size_t at) {
        const std::size_t actual = Ledger::instance().live_count();
        const std::size_t expected = model_live();
        if (actual != expected) {
            fail(at, std::to_string(actual) + " values alive, the model has " + std::to_string(expected));
        }
    }

    void check_live_set(std::size_t at) {
        std::vector<std::uint64_t> expected;
        for (const ThreadModel& m : model_) {
            for (auto& [slot, v] : m.locals) expected.push_back(v.serial);
            for (const auto& s : m.stacks) {
                for (const Value& v : s) expected.push_back(v.serial);
            }
            for (const Frame& f : m.frames) {
                if (f.g) expected.push_back(f.g->serial);
            }
        }
        std::sort(expected.begin(), expected.end());
        if (Ledger::instance().live_sorted() != expected)
            fail(at, "the set of live values differs from the model");
    }

    /// A value made during the operation must be new: live, and younger than the operation.
    bool check_fresh(std::size_t at, const Tracked* p, std::uint64_t first_new, int payload,
                     const char* what) {
        if (p == nullptr) {
            fail(at, std::string(what) + ": no value");
            return false;
        }
        if (p->serial < first_new) {
            fail(at, std::string(what) + ": returned old value #" + std::to_string(p->serial));
            return false;
        }
        if (p->payload != payload) {
            fail(at, std::string(what) + ": payload " + std::to_string(p->payload) + ", expected " +
                         std::to_string(payload));
            return false;
        }
        return true;
    }

    bool check_same(std::size_t at, const Tracked* p, const std::optional<Value>& expected,
                    const char* what) {
        if (!expected) {
            if (p != nullptr) {
                fail(at, std::string(what) + ": has value #" + std::to_string(p->serial) +
                             ", the model has none");
                return false;
            }
            return true;
        }
        if (p == nullptr) {
            fail(at,
                 std::string(what) + ": has no value, the model has #" + std::to_string(expected->serial));
            return false;
        }
        if (p->serial != expected->serial || p->payload != expected->payload) {
            fail(at, std::string(what) + ": value #" + std::to_string(p->serial) + " payload " +
                         std::to_string(p->payload) + ", the model has #" + std::to_string(expected->serial) +
                         " payload " + std::to_string(expected->payload));
            return false;
        }
        return true;
    }

    template <class E, class F>
    bool expect_throw(std::size_t at, F&& f, const char* what, std::string* message = nullptr) {
        try {
            f();
        } catch (const E& e) {
            if (message != nullptr) *message = e.what();
            return true;
        } catch (const std::exception& e) {
            fail(at, std::string(what) + ": threw the wrong exception: " + e.what());
            return false;
        }
        fail(at, std::string(what) + ": did not throw");
        return false;
    }

    // ---- execution (on worker threads) ----

    void execute_range(int t, std::size_t begin, std::size_t end) {
        for (std::size_t i = begin; i < end && result_.ok; ++i) {
            const std::uint64_t first_new = Ledger::instance().next();
            Deaths expected;
            bool applied = true;
            try {
                applied = execute((*ops_)[i], i, t, first_new, expected);
            } catch (const std::exception& e) {
                fail(i, std::string("unexpected exception: ") + e.what());
            } catch (...) {
                fail(i, "unexpected exception of unknown type");
            }
            if (!result_.ok) return;
            if (applied) ++result_.executed;
            check_deaths(i, std::move(expected), "after the operation");
            if (!sink_->records.empty()) fail(i, "unexpected teardown callback");
            check_live_count(i);
            if (result_.ok && (i & 63) == 0) check_live_set(i);
        }
    }

    std::optional<Value> model_local(int t, int slot) const {
        auto it = model_[t].locals.find(slot);
        if (it == model_[t].locals.end()) return std::nullopt;
        return it->second;
    }

    /// Executes one operation on worker `t`; returns false when it was inapplicable (skipped).
    bool execute(const Op& op, std::size_t at, int t, std::uint64_t first_new, Deaths& expected) {
        ThreadModel& m = model_[t];
        const int slot = op.a % local_slots;
        const int stack = op.a % stack_slots;
        ctxlocal::Local<Tracked>* local = locals_[slot].get();
        LocalModel& lm = local_model_[slot];
        switch (op.kind) {
            case Kind::local_create: {
                if (local != nullptr) return false;
                lm.alive = true;
                lm.mode = op.b % 3;
                if (lm.mode == 0) {
                    lm.init_payload = 0;
                    locals_[slot] = std::make_unique<ctxlocal::Local<Tracked>>();
                } else if (lm.mode == 1) {
                    lm.init_payload = 101;
                    locals_[slot] = std::make_unique<ctxlocal::Local<Tracked>>(
                        [] { return Tracked(101, tl_init_throws); });
                } else {
                    lm.init_payload = 200 + op.b / 3;
                    locals_[slot] = std::make_unique<ctxlocal::Local<Tracked>>(
                        [p = lm.init_payload] { return Tracked(p, tl_init_throws); });
                }
                return true;
            }
            case Kind::local_destroy: {
                if (local == nullptr) return false;
                // Every thread's value dies, on the destroying thread.
                for (int u = 0; u < threads_; ++u) {
                    auto it = model_[u].locals.find(slot);
                    if (it != model_[u].locals.end()) {
                        expected.emplace_back(it->second.serial, t);
                        model_[u].locals.erase(it);
                    }
                }
                locals_[slot].reset();
                lm = LocalModel{};
                return true;
            }
            case Kind::get: {
                if (local == nullptr) return false;
                const Tracked* p = local->get();
                if (fault_ == Fault::read_other_thread && p == nullptr) {
                    // Injected defect: "find" another thread's value, as a mixed-up table would.
                    local->for_each([&](Tracked& v) { p = &v; });
                }
                if (!check_same(at, p, model_local(t, slot), "get()")) return true;
                if (local->has_value() != (p != nullptr)) fail(at, "has_value() disagrees with get()");
                return true;
            }
            case Kind::value: {
                if (local == nullptr) return false;
                const std::optional<Value> before = model_local(t, slot);
                tl_init_throws = (op.b & 1) != 0;
                if (!before && lm.mode != 0 && tl_init_throws) {
                    // The initialiser throws: value() rethrows and creates nothing.
                    expect_throw<InjectedError>(
                        at, [&] { (void)local->value(); }, "value() with a throwing initialiser");
                    tl_init_throws = false;
                    if (local->get() != nullptr) fail(at, "value() whose initialiser threw created a value");
                    return true;
                }
                Tracked& v = local->value();
                tl_init_throws = false;
                if (before) {
                    check_same(at, &v, before, "value()");
                } else if (check_fresh(at, &v, first_new, lm.init_payload, "value() creating")) {
                    m.locals[slot] = Value{v.serial, v.payload};
                    if (local->get() != &v) fail(at, "get() after value() returns another object");
                }
                return true;
            }
            case Kind::emplace: {
                if (local == nullptr) return false;
                const std::optional<Value> before = model_local(t, slot);
                const int payload = op.b >> 1;
                if (op.b & 1) {
                    // The constructor throws: the old value is kept unchanged.
                    expect_throw<InjectedError>(
                        at, [&] { (void)local->emplace(payload, true); }, "throwing emplace");
                    check_same(at, local->get(), before, "after a throwing emplace");
                    return true;
                }
                Tracked& v = local->emplace(payload);
                if (before) expected.emplace_back(before->serial, t);
                if (check_fresh(at, &v, first_new, payload, "emplace()")) {
                    m.locals[slot] = Value{v.serial, v.payload};
                    if (local->get() != &v) fail(at, "get() after emplace() returns another object");
                }
                return true;
            }
            case Kind::mutate: {
                if (local == nullptr) return false;
                Tracked* p = local->get();
                auto it = m.locals.find(slot);
                if (it == m.locals.end()) {
                    check_same(at, p, std::nullopt, "get() before mutate");
                    return false;
                }
                if (!check_same(at, p, it->second, "get() before mutate")) return true;
                p->payload = op.b;
                it->second.payload = op.b;
                return true;
            }
            case Kind::reset: {
                if (local == nullptr) return false;
                auto it = m.locals.find(slot);
                if (it != m.locals.end()) {
                    expected.emplace_back(it->second.serial, t);
                    m.locals.erase(it);
                }
                if (fault_ != Fault::skip_reset) local->reset();
                if (local->get() != nullptr) fail(at, "get() after reset() is not null");
                return true;
            }
            case Kind::count: {
                if (local == nullptr) return false;
                std::size_t n = 0;
                for (const ThreadModel& u : model_) n += u.locals.count(slot);
                const std::size_t actual = local->count();
                if (actual != n)
                    fail(at, "count() = " + std::to_string(actual) + ", the model has " + std::to_string(n));
                return true;
            }
            case Kind::for_each: {
                if (local == nullptr) return false;
                const int add = op.b & 1;
                std::vector<std::pair<std::uint64_t, int>> seen, want;
                local->for_each([&](Tracked& v) {
                    seen.emplace_back(v.serial, v.payload);
                    v.payload += add;
                });
                for (ThreadModel& u : model_) {
                    auto it = u.locals.find(slot);
                    if (it == u.locals.end()) continue;
                    want.emplace_back(it->second.serial, it->second.payload);
                    it->second.payload += add;
                }
                std::sort(seen.begin(), seen.end());
                std::sort(want.begin(), want.end());
                if (seen != want) {
                    fail(at, "for_each visited " + std::to_string(seen.size()) + " values, the model has " +
                                 std::to_string(want.size()) + " (or their identities differ)");
                }
                return true;
            }
            case Kind::stack_push: {
                auto& s = *stacks_[stack];
                auto& ms = m.stacks[stack];
                const int payload = op.b >> 2;
                switch (op.b & 3) {
                    case 0:
                        s.push(Tracked(payload));
                        break;
                    case 1:
                        (void)s.emplace(payload);
                        break;
                    case 2: {
                        // The constructor throws: the stack is unchanged.
                        const std::uint64_t top = ms.empty() ? 0 : ms.back().serial;
                        expect_throw<InjectedError>(
                            at, [&] { (void)s.emplace(payload, true); }, "throwing LocalStack::emplace");
                        if (s.size() != ms.size() || (s.top() == nullptr ? 0 : s.top()->serial) != top) {
                            fail(at, "a throwing LocalStack::emplace changed the stack");
                        }
                        return true;
                    }
                    default: {
                        const Tracked original(payload);
                        s.push(original);  // a copy: the original dies at the end of this scope
                        expected.emplace_back(original.serial, t);
                        break;
                    }
                }
                const Tracked* top = s.top();
                if (!check_fresh(at, top, first_new, payload, "LocalStack::top() after push")) return true;
                ms.push_back(Value{top->serial, top->payload});
                if (s.size() != ms.size()) fail(at, "LocalStack::size() after push differs from the model");
                return true;
            }
            case Kind::stack_pop: {
                auto& s = *stacks_[stack];
                auto& ms = m.stacks[stack];
                std::optional<Tracked> popped = s.pop();
                if (ms.empty()) {
                    if (popped) fail(at, "pop() of an empty stack returned a value");
                    return true;
                }
                if (!check_same(at, popped ? &*popped : nullptr, ms.back(), "pop()")) return true;
                expected.emplace_back(ms.back().serial, t);
                ms.pop_back();
                popped.reset();
                if (s.size() != ms.size()) fail(at, "LocalStack::size() after pop differs from the model");
                return true;
            }
            case Kind::stack_top: {
                auto& s = *stacks_[stack];
                auto& ms = m.stacks[stack];
                check_same(at, s.top(), ms.empty() ? std::nullopt : std::optional<Value>(ms.back()), "top()");
                if (s.size() != ms.size()) fail(at, "LocalStack::size() differs from the model");
                if (s.empty() != ms.empty()) fail(at, "LocalStack::empty() differs from the model");
                return true;
            }
            case Kind::stack_clear: {
                auto& ms = m.stacks[stack];
                for (const Value& v : ms) expected.emplace_back(v.serial, t);
                ms.clear();
                stacks_[stack]->clear();
                if (stacks_[stack]->local().has_value())
                    fail(at, "LocalStack::clear() kept the thread's storage");
                return true;
            }
            case Kind::manager_cleanup: {
                ctxlocal::LocalManager manager;
                for (auto& l : locals_) {
                    if (l) manager.add(*l);
                }
                for (auto& s : stacks_) manager.add(*s);
                for (auto& [sl, v] : m.locals) expected.emplace_back(v.serial, t);
                m.locals.clear();
                for (auto& ms : m.stacks) {
                    for (const Value& v : ms) expected.emplace_back(v.serial, t);
                    ms.clear();
                }
                manager.cleanup();
                return true;
            }
            case Kind::push_app:
            case Kind::push_request:
            case Kind::pop_app:
            case Kind::pop_request:
            case Kind::pop_top:
            case Kind::g_set:
            case Kind::g_get:
                return execute_context(op, at, t, first_new, expected);
            case Kind::thread_start:
            case Kind::thread_exit:
            case Kind::kind_count:
                break;
        }
        return false;
    }

    // ---- contexts ----

    int top_app_index(const ThreadModel& m) const {
        for (std::size_t i = m.frames.size(); i-- > 0;) {
            if (!m.frames[i].request) return static_cast<int>(i);
        }
        return -1;
    }
    int top_request_index(const ThreadModel& m) const {
        for (std::size_t i = m.frames.size(); i-- > 0;) {
            if (m.frames[i].request) return static_cast<int>(i);
        }
        return -1;
    }
    std::size_t depth(const ThreadModel& m, bool request) const {
        std::size_t n = 0;
        for (const Frame& f : m.frames) n += f.request == request ? 1 : 0;
        return n;
    }
    const void* model_current_app(const ThreadModel& m) const {
        const int i = top_app_index(m);
        return i < 0 ? nullptr : &model_apps()[m.frames[i].app];
    }
    const void* model_request(const ThreadModel& m) const {
        const int i = top_request_index(m);
        return i < 0 ? nullptr : &req_ctx_[m.frames[i].ctx]->request();
    }

    void check_context_state(std::size_t at, const ThreadModel& m) {
        if (Web::app_context_depth() != depth(m, false))
            fail(at, "app_context_depth() differs from the model");
        if (Web::request_context_depth() != depth(m, true))
            fail(at, "request_context_depth() differs from the model");
        if (Web::current_app.get() != model_current_app(m)) fail(at, "current_app differs from the model");
        if (Web::request.get() != model_request(m)) fail(at, "request differs from the model");
        if (Web::has_app_context() != (top_app_index(m) >= 0))
            fail(at, "has_app_context() differs from the model");
        if (Web::has_request_context() != (top_request_index(m) >= 0)) {
            fail(at, "has_request_context() differs from the model");
        }
    }

    /// Models popping the top app frame: teardown on its last pop, then its g dies.
    void model_pop_app(ThreadModel& m, int t, std::vector<TeardownRecord>& log, Deaths& expected) {
        Frame& f = m.frames.back();
        if (f.depth == 1) {
            for (int cb = 3; cb >= 2; --cb) {
                log.push_back(TeardownRecord{cb, f.app, depth(m, false), depth(m, true), &model_apps()[f.app],
                                             model_request(m), false});
            }
        }
        if (f.g) expected.emplace_back(f.g->serial, t);
        m.frames.pop_back();
    }
    void model_pop_request(ThreadModel& m, int t, std::vector<TeardownRecord>& log, Deaths& expected) {
        const Frame f = m.frames.back();
        if (f.depth == 1) {
            for (int cb = 1; cb >= 0; --cb) {
                log.push_back(TeardownRecord{cb, f.app, depth(m, false), depth(m, true), model_current_app(m),
                                             &req_ctx_[f.ctx]->request(), false});
            }
        }
        m.frames.pop_back();
        if (f.pushed_app) model_pop_app(m, t, log, expected);
    }

    /// Pops a context for real and checks the outcome against the model's teardown log and errors.
    template <class Pop>
    void checked_pop(std::size_t at, const Op& op, int t, bool request, int ctx, Pop&& pop,
                     Deaths& expected) {
        ThreadModel& m = model_[t];
        const std::string name = request ? req_ctx_[ctx]->describe() : app_ctx_[ctx]->describe();
        // What the model says about this pop.
        std::string misuse;
        int frame = -1;
        for (std::size_t i = m.frames.size(); i-- > 0;) {
            if (m.frames[i].request == request && m.frames[i].ctx == ctx) {
                frame = static_cast<int>(i);
                break;
            }
        }
        if (m.frames.empty()) {
            misuse = "Cannot pop this context (" + name + "), there is no active context.";
        } else if (frame < 0) {
            misuse = "Cannot pop this context (" + name + "), it is not pushed.";
        } else if (frame != static_cast<int>(m.frames.size()) - 1) {
            misuse = "Cannot pop this context (" + name + "), it is not the active context (";
        }
        if (!misuse.empty()) {
            std::string message;
            if (expect_throw<ctxlocal::context_error>(at, pop, "a wrong pop", &message) &&
                message.compare(0, misuse.size(), misuse) != 0) {
                fail(at,
                     "wrong pop: message \"" + message + "\", expected it to start with \"" + misuse + "\"");
            }
            check_context_state(at, m);
            return;
        }
        std::vector<TeardownRecord> log;
        if (request) {
            model_pop_request(m, t, log, expected);
        } else {
            model_pop_app(m, t, log, expected);
        }
        std::vector<std::string> throwers;
        for (const TeardownRecord& r : log) {
            if ((op.b >> r.callback) & 1u) {
                throwers.push_back(std::string("teardown ") + callback_name(r.callback) + " app" +
                                   std::to_string(r.app));
            }
        }
        sink_->throw_mask = op.b;
        try {
            pop();
            if (!throwers.empty()) fail(at, "pop(): a teardown callback threw, but pop() did not rethrow");
        } catch (const ctxlocal::teardown_error& e) {
            std::vector<std::string> got;
            for (const std::exception_ptr& p : e.errors()) got.push_back(ctxlocal::detail::message_of(p));
            if (throwers.size() < 2 || got != throwers) {
                fail(at, std::string("pop(): unexpected teardown_error: ") + e.what());
            }
        } catch (const InjectedError& e) {
            if (throwers.size() != 1 || throwers.front() != e.what()) {
                fail(at, std::string("pop(): unexpected rethrown error: ") + e.what());
            }
        }
        sink_->throw_mask = 0;
        std::vector<TeardownRecord> actual;
        actual.swap(sink_->records);
        if (actual != log) {
            std::string seen;
            for (const TeardownRecord& r : actual) seen += std::string(" ") + callback_name(r.callback);
            std::string want;
            for (const TeardownRecord& r : log) want += std::string(" ") + callback_name(r.callback);
            fail(at, "teardown ran [" + seen + " ], the model expects [" + want +
                         " ] (or what they saw differs)");
        }
        check_context_state(at, m);
    }

    bool execute_context(const Op& op, std::size_t at, int t, std::uint64_t first_new, Deaths& expected) {
        ThreadModel& m = model_[t];
        switch (op.kind) {
            case Kind::push_app: {
                const int i = op.a % app_contexts;
                int previous = -1;
                for (std::size_t k = m.frames.size(); k-- > 0;) {
                    if (!m.frames[k].request && m.frames[k].ctx == i) {
                        previous = static_cast<int>(k);
                        break;
                    }
                }
                app_ctx_[i]->push();
                Frame f{false, i, i % 2, false, 1, m.frames.size(), std::nullopt};
                if (previous >= 0) {
                    f.depth = m.frames[previous].depth + 1;
                    f.g_home = m.frames[previous].g_home;
                }
                m.frames.push_back(f);
                check_context_state(at, m);
                return true;
            }
            case Kind::push_request: {
                const int i = op.a % request_contexts;
                int previous = -1;
                for (std::size_t k = m.frames.size(); k-- > 0;) {
                    if (m.frames[k].request && m.frames[k].ctx == i) {
                        previous = static_cast<int>(k);
                        break;
                    }
                }
                const int top_app = top_app_index(m);
                const bool push_app = top_app < 0 || m.frames[top_app].app != i % 2;
                req_ctx_[i]->push();
                if (push_app)
                    m.frames.push_back(Frame{false, -1, i % 2, false, 1, m.frames.size(), std::nullopt});
                m.frames.push_back(Frame{true, i, i % 2, push_app,
                                         previous >= 0 ? m.frames[previous].depth + 1 : 1, 0, std::nullopt});
                check_context_state(at, m);
                return true;
            }
            case Kind::pop_app: {
                const int i = op.a % app_contexts;
                checked_pop(
                    at, op, t, false, i, [&] { app_ctx_[i]->pop(); }, expected);
                return true;
            }
            case Kind::pop_request: {
                const int i = op.a % request_contexts;
                checked_pop(
                    at, op, t, true, i, [&] { req_ctx_[i]->pop(); }, expected);
                return true;
            }
            case Kind::pop_top: {
                if (m.frames.empty()) return false;
                const Frame& top = m.frames.back();
                const int i = top.ctx;  // never an implicit frame: its request frame is above it
                if (top.request) {
                    checked_pop(
                        at, op, t, true, i, [&] { req_ctx_[i]->pop(); }, expected);
                } else {
                    checked_pop(
                        at, op, t, false, i, [&] { app_ctx_[i]->pop(); }, expected);
                }
                return true;
            }
            case Kind::g_set: {
                const int top_app = top_app_index(m);
                if (top_app < 0) {
                    std::string message;
                    if (expect_throw<ctxlocal::unbound_error>(
                            at, [&] { (void)Web::g->set("t", Tracked(op.b)); }, "g outside an app context",
                            &message) &&
                        message != Web::outside_app_context_message) {
                        fail(at, "g outside an app context: wrong message: " + message);
                    }
                    return true;
                }
                Frame& home = m.frames[m.frames[top_app].g_home];
                Tracked& stored = Web::g->set("t", Tracked(op.b));
                if (home.g) expected.emplace_back(home.g->serial, t);
                if (check_fresh(at, &stored, first_new, op.b, "g->set()"))
                    home.g = Value{stored.serial, stored.payload};
                return true;
            }
            case Kind::g_get: {
                const int top_app = top_app_index(m);
                if (top_app < 0) {
                    if (Web::g.get() != nullptr) fail(at, "g is bound outside an app context");
                    return true;
                }
                const Frame& home = m.frames[m.frames[top_app].g_home];
                check_same(at, Web::g->get_if<Tracked>("t"), home.g, "g->get_if()");
                return true;
            }
            default:
                return false;
        }
    }

    const int threads_;
    const Fault fault_;
    std::vector<ThreadModel> model_;
    std::vector<std::unique_ptr<Worker>> workers_;
    std::unique_ptr<ctxlocal::Local<Tracked>> locals_[local_slots];
    LocalModel local_model_[local_slots];
    std::unique_ptr<ctxlocal::LocalStack<Tracked>> stacks_[stack_slots];
    std::vector<std::unique_ptr<Web::AppContext>> app_ctx_;
    std::vector<std::unique_ptr<Web::RequestContext>> req_ctx_;
    TeardownSink* sink_ = nullptr;
    const std::vector<Op>* ops_ = nullptr;
    Result result_;
};

/// Runs `ops` on a fresh interpreter with `threads` workers.
inline Result run_ops(const std::vector<Op>& ops, int threads, Fault fault = Fault::none) {
    Interpreter interpreter(threads, fault);
    return interpreter.run(ops);
}

/// Delta debugging: removes chunks of operations (halving the chunk size) while the sequence still fails,
/// for at most `budget`. Returns a failing sequence no longer than `ops`.
inline std::vector<Op> shrink(std::vector<Op> ops, int threads, Fault fault = Fault::none,
                              std::chrono::seconds budget = std::chrono::seconds(60)) {
    const auto deadline = std::chrono::steady_clock::now() + budget;
    Result first = run_ops(ops, threads, fault);
    if (first.ok) return ops;
    if (first.failed_at + 1 < ops.size()) ops.resize(first.failed_at + 1);
    std::size_t chunk = ops.size() / 2;
    if (chunk == 0) chunk = 1;
    while (std::chrono::steady_clock::now() < deadline) {
        bool removed = false;
        for (std::size_t start = 0; start < ops.size() && std::chrono::steady_clock::now() < deadline;) {
            std::vector<Op> candidate;
            candidate.reserve(ops.size());
            candidate.insert(candidate.end(), ops.begin(), ops.begin() + static_cast<std::ptrdiff_t>(start));
            const std::size_t stop = std::min(ops.size(), start + chunk);
            candidate.insert(candidate.end(), ops.begin() + static_cast<std::ptrdiff_t>(stop), ops.end());
            const Result r = run_ops(candidate, threads, fault);
            if (!r.ok) {
                if (r.failed_at + 1 < candidate.size()) candidate.resize(r.failed_at + 1);
                ops = std::move(candidate);
                removed = true;
            } else {
                start += chunk;
            }
        }
        if (!removed) {
            if (chunk == 1) break;
            chunk /= 2;
        }
    }
    return ops;
}

}  // namespace ctxmodel
