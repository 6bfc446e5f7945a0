#pragma once
// Runs a blocking call (libpqxx) on a thread pool and resumes the awaiting coroutine on its own
// executor when the call returns (STYLE.md §8: no blocking call on an io_context thread).
//
// `work` is moved into the pool's queue; whatever it captures by reference must outlive the
// co_await (the awaiting coroutine's locals do: the coroutine is suspended until the call ends).
// An exception thrown by `work` is rethrown in the coroutine.

#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace bankworker::queue {

namespace detail {
struct no_value {};
template <class T>
using blocking_value = std::conditional_t<std::is_void_v<T>, no_value, T>;
}  // namespace detail

template <class Work>
auto run_blocking(boost::asio::thread_pool& pool, Work work)
    -> boost::asio::awaitable<std::invoke_result_t<Work&>> {
  using result_type = std::invoke_result_t<Work&>;
  using value_type = detail::blocking_value<result_type>;
  auto initiate = [&pool](auto handler, Work job) {
    boost::asio::post(pool, [handler = std::move(handler), job = std::move(job)]() mutable {
      std::exception_ptr error;
      std::optional<value_type> value;
      try {
        if constexpr (std::is_void_v<result_type>) {
          job();
          value.emplace();
        } else {
          value.emplace(job());
        }
      } catch (...) {
        error = std::current_exception();
      }
      auto executor = boost::asio::get_associated_executor(handler);
      boost::asio::dispatch(executor, [handler = std::move(handler), error, value = std::move(value)]() mutable {
        std::move(handler)(error, value ? std::move(*value) : value_type{});
      });
    });
  };
  if constexpr (std::is_void_v<result_type>) {
    co_await boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(std::exception_ptr, value_type)>(
        std::move(initiate), boost::asio::use_awaitable, std::move(work));
  } else {
    co_return co_await boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&,
                                                   void(std::exception_ptr, value_type)>(
        std::move(initiate), boost::asio::use_awaitable, std::move(work));
  }
}

}  // namespace bankworker::queue
