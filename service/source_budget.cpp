#include "service/source_budget.hpp"

#include <algorithm>

#include <boost/asio/ip/address.hpp>

namespace bankworker::service {

source_budget::source_budget(source_budget_settings settings) : settings_(settings) {}

std::string source_budget::source_key(std::string_view address) {
  if (address.find(':') == std::string_view::npos) return std::string(address);
  boost::system::error_code error;
  const boost::asio::ip::address parsed = boost::asio::ip::make_address(std::string(address), error);
  if (error || !parsed.is_v6()) return std::string(address);
  if (parsed.to_v6().is_v4_mapped()) {
    return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, parsed.to_v6()).to_string();
  }
  boost::asio::ip::address_v6::bytes_type bytes = parsed.to_v6().to_bytes();
  std::fill(bytes.begin() + 8, bytes.end(), 0);
  return boost::asio::ip::address_v6(bytes).to_string() + "/64";
}

bool source_budget::try_take(std::string_view source, std::chrono::steady_clock::time_point now) {
  const std::string key = source_key(source);
  const std::size_t sources_max = std::clamp<std::size_t>(settings_.sources_max, 1, limits::source_budget_sources_max);
  std::lock_guard lock(mutex_);
  if (now - total_.started >= settings_.window) total_ = {now, 0};
  auto it = sources_.find(key);
  if (it == sources_.end()) {
    if (sources_.size() >= sources_max) {
      const auto oldest = std::min_element(sources_.begin(), sources_.end(), [](const auto& a, const auto& b) {
        return a.second.started < b.second.started;
      });
      sources_.erase(oldest);
    }
    it = sources_.emplace(key, window_use{now, 0}).first;
  } else if (now - it->second.started >= settings_.window) {
    it->second = {now, 0};
  }
  if (it->second.taken >= settings_.per_source_max) return false;
  if (total_.taken >= settings_.total_max) return false;
  ++it->second.taken;
  ++total_.taken;
  return true;
}

std::size_t source_budget::sources() const {
  std::lock_guard lock(mutex_);
  return sources_.size();
}

}  // namespace bankworker::service
