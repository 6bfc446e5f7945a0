#pragma once
// The providers' published shapes in tests/fixtures (README there names each source and commit),
// read as text, and the few edits a scenario makes to a copy: one field's value replaced, or an
// object put inside an event envelope. Edits fail the test when their anchor is missing, so a
// re-copied fixture that changed shape is noticed instead of silently testing something else.

#include <string>
#include <string_view>

namespace bankworker::test {

// The file tests/fixtures/<name> ("stripe/charge.json"); fails the test when it cannot be read.
std::string read_fixture(std::string_view name);

// `json` with the first `"field": <old>` (exactly as written in the fixture) made `"field": <value>`.
std::string with_field(std::string json, std::string_view field, std::string_view old_value, std::string_view value);

// The Stripe event fixture (stripe/event.json) with `type` and `data.object` replaced.
std::string stripe_event(std::string_view type, std::string_view object_json);

}  // namespace bankworker::test
