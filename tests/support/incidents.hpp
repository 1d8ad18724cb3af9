// Records the incidents that Contexts report (set_incident_handler), for tests that check them.
#pragma once

#include <ctxlocal/context.hpp>

#include <algorithm>
#include <cstddef>
#include <exception>
#include <mutex>
#include <string>
#include <vector>

namespace test_support {

/// One recorded incident.
struct Seen {
    ctxlocal::Incident::Kind kind;
    std::string message;
    std::exception_ptr error;
};

/// While alive, records the incidents of every `Contexts` instantiation in Webs; restores the default
/// handler (null) when it ends. The record is shared by all captures and cleared at both ends.
template <class... Webs>
class IncidentCapture {
public:
    IncidentCapture() {
        clear();
        (Webs::set_incident_handler(&record), ...);
    }
    ~IncidentCapture() {
        (Webs::set_incident_handler(nullptr), ...);
        clear();
    }
    IncidentCapture(const IncidentCapture&) = delete;
    IncidentCapture& operator=(const IncidentCapture&) = delete;

    static std::vector<Seen> all() {
        std::lock_guard<std::mutex> lock(mutex_);
        return seen_;
    }
    static std::size_t count(ctxlocal::Incident::Kind kind) {
        std::lock_guard<std::mutex> lock(mutex_);
        return static_cast<std::size_t>(
            std::count_if(seen_.begin(), seen_.end(), [&](const Seen& s) { return s.kind == kind; }));
    }
    static void clear() {
        std::lock_guard<std::mutex> lock(mutex_);
        seen_.clear();
    }

private:
    static void record(const ctxlocal::Incident& incident) {
        std::lock_guard<std::mutex> lock(mutex_);
        seen_.push_back(Seen{incident.kind, incident.message, incident.error});
    }

    static inline std::mutex mutex_;
    static inline std::vector<Seen> seen_;
};

}  // namespace test_support
