#pragma once
// Masks secret-shaped text before it reaches a log line, an error message or the external-call log.
//
// What it masks, wherever it stands inside a larger string or a JSON document:
//   - Plaid tokens, <type>-<environment>-<uuid> (access-sandbox-…, public-production-…, …),
//     whatever comes before the type or after the uuid: the type and environment stay, the uuid goes;
//   - Stripe secret and restricted keys (sk_live_…, sk_test_…, rk_live_…, rk_test_…), webhook
//     signing secrets (whsec_…) and Vault tokens (hvs.…, hvb.…, hvr.…): the prefix stays;
//   - `Authorization:` values of any scheme (Proxy-Authorization too, the name in any case): the
//     scheme stays, the rest of the line goes (up to a raw or JSON-escaped line break, or the end
//     of the JSON string holding it);
//   - card numbers: 13–19 digits (optionally grouped by up to 3 spaces, dashes, dots, slashes,
//     underscores or tabs) that pass the Luhn check, masked to the first 6 and last 4 digits;
//   - the value of a JSON member whose name says it is secret ("secret", "access_token",
//     "plaintext", …), the name in any case and any JSON escaping;
//   - any exact occurrence of a secret the caller passes in `known` (configuration secrets).
// Everything else is copied unchanged. The scan is one pass with no regular expressions.

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "crypto/secret.hpp"

namespace bankworker::crypto {

inline constexpr std::string_view redaction_mark = "[REDACTED]";

// Secrets shorter than this are not searched for: masking every "ab" would make logs unreadable
// and a secret that short is not a secret.
inline constexpr std::size_t known_secret_bytes_min = 8;

// Appends the redacted form of `text` to `out`; returns how many values were masked.
std::size_t redact_into(std::string_view text, std::string& out,
                        std::span<const secret* const> known = {});

// Convenience for cold paths.
std::string redact(std::string_view text, std::span<const secret* const> known = {});

// Whether digits (separators ignored) pass the Luhn check. Exposed for tests.
bool passes_luhn(std::string_view digits) noexcept;

}  // namespace bankworker::crypto
