#include "crypto/redact.hpp"

#include <array>
#include <vector>

#include "core/assert.hpp"
#include "core/uuid.hpp"

namespace bankworker::crypto {

namespace {

constexpr std::size_t uuid_text_bytes = 36;
constexpr std::size_t plaid_type_bytes_max = 24;
constexpr std::size_t card_digits_min = 13;
constexpr std::size_t card_digits_max = 19;
constexpr std::size_t card_kept_head_digits = 6;
constexpr std::size_t card_kept_tail_digits = 4;

constexpr std::array<std::string_view, 3> plaid_environments = {"sandbox", "development", "production"};
constexpr std::array<std::string_view, 4> stripe_key_prefixes = {"sk_live_", "sk_test_", "rk_live_", "rk_test_"};
constexpr std::string_view webhook_secret_prefix = "whsec_";
// JSON member names whose string value is a secret whatever it looks like.
constexpr std::array<std::string_view, 8> secret_member_names = {
    "secret", "client_secret", "access_token", "public_token",
    "api_key", "password", "webhook_secret", "authorization"};

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
bool is_lower(char c) noexcept { return c >= 'a' && c <= 'z'; }
bool is_alnum(char c) noexcept { return is_digit(c) || is_lower(c) || (c >= 'A' && c <= 'Z'); }

// A match: `length` bytes of input of which the first `kept_bytes` are copied and the rest masked.
struct match {
  std::size_t length = 0;
  std::size_t kept_bytes = 0;
};

// <type>-<environment>-<uuid>, not followed by more alphanumerics.
match match_plaid_token(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size() && i < plaid_type_bytes_max && is_lower(s[i])) ++i;
  if (i == 0 || i >= s.size() || s[i] != '-') return {};
  ++i;
  for (const std::string_view environment : plaid_environments) {
    const std::size_t uuid_at = i + environment.size() + 1;
    if (s.size() < uuid_at + uuid_text_bytes) continue;
    if (s.substr(i, environment.size()) != environment || s[uuid_at - 1] != '-') continue;
    if (!core::uuid::parse(s.substr(uuid_at, uuid_text_bytes))) continue;
    const std::size_t end = uuid_at + uuid_text_bytes;
    if (end < s.size() && is_alnum(s[end])) continue;
    return {end, uuid_at};
  }
  return {};
}

// A known prefix followed by at least one character of the key alphabet.
match match_prefixed_key(std::string_view s, std::string_view prefix, bool base64_alphabet) noexcept {
  if (!s.starts_with(prefix)) return {};
  std::size_t end = prefix.size();
  while (end < s.size() &&
         (is_alnum(s[end]) || (base64_alphabet && (s[end] == '+' || s[end] == '/' || s[end] == '=')))) {
    ++end;
  }
  if (end == prefix.size()) return {};
  return {end, prefix.size()};
}

match match_secret_key(std::string_view s) noexcept {
  if (s.front() == 'w') return match_prefixed_key(s, webhook_secret_prefix, true);
  for (const std::string_view prefix : stripe_key_prefixes) {
    if (const match m = match_prefixed_key(s, prefix, false); m.length > 0) return m;
  }
  return {};
}

// "name" <ws> : <ws> "value" where name is a secret member; masks the value between its quotes.
match match_secret_member(std::string_view s) noexcept {
  for (const std::string_view name : secret_member_names) {
    if (s.size() < name.size() + 2 || s.substr(1, name.size()) != name || s[name.size() + 1] != '"') {
      continue;
    }
    std::size_t i = name.size() + 2;
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    if (i >= s.size() || s[i] != ':') return {};
    ++i;
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    if (i >= s.size() || s[i] != '"') return {};
    const std::size_t value_at = i + 1;
    for (std::size_t j = value_at; j < s.size(); ++j) {
      if (s[j] == '\\') {
        ++j;
        continue;
      }
      if (s[j] == '"') return {j, value_at};  // the closing quote is copied after the mark
    }
    return {s.size(), value_at};  // unterminated: mask to the end rather than leak
  }
  return {};
}

// A run of digits, single spaces or dashes allowed between digits. Returns the run's length and
// how many digits it holds.
struct digit_run {
  std::size_t length = 0;
  std::size_t digits = 0;
};

digit_run scan_digit_run(std::string_view s) noexcept {
  digit_run run;
  std::size_t i = 0;
  while (i < s.size()) {
    if (is_digit(s[i])) {
      ++run.digits;
      run.length = ++i;
    } else if ((s[i] == ' ' || s[i] == '-') && i + 1 < s.size() && is_digit(s[i + 1])) {
      ++i;
    } else {
      break;
    }
  }
  return run;
}

void append_masked_card(std::string_view run, std::size_t digits, std::string& out) {
  std::size_t seen = 0;
  for (const char c : run) {
    if (!is_digit(c)) {
      out.push_back(c);
      continue;
    }
    const bool kept = seen < card_kept_head_digits || seen >= digits - card_kept_tail_digits;
    out.push_back(kept ? c : '*');
    ++seen;
  }
}

// `known` holds open views of the caller's secrets for the whole scan, so the guarded pages are
// opened once per call rather than once per character.
std::size_t match_known(std::string_view s, const std::vector<secret::view>& known) noexcept {
  for (const secret::view& candidate : known) {
    const std::string_view plaintext = candidate.text();
    if (s.front() == plaintext.front() && s.starts_with(plaintext)) return plaintext.size();
  }
  return 0;
}

}  // namespace

bool passes_luhn(std::string_view digits) noexcept {
  int sum = 0;
  bool double_it = false;
  std::size_t count = 0;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    if (!is_digit(*it)) continue;
    int value = *it - '0';
    if (double_it) {
      value *= 2;
      if (value > 9) value -= 9;
    }
    sum += value;
    double_it = !double_it;
    ++count;
  }
  return count > 0 && sum % 10 == 0;
}

std::size_t redact_into(std::string_view text, std::string& out, std::span<const secret* const> known) {
  std::size_t redactions = 0;
  std::size_t copied_to = 0;  // text[copied_to, i) is pending verbatim output
  std::size_t i = 0;

  const auto emit_mask = [&](std::size_t kept_from, std::size_t kept_bytes, std::size_t end) {
    out.append(text.substr(copied_to, kept_from + kept_bytes - copied_to));
    out.append(redaction_mark);
    ++redactions;
    copied_to = end;
    i = end;
  };

  std::vector<secret::view> known_views;
  for (const secret* candidate : known) {
    if (candidate != nullptr && candidate->size() >= known_secret_bytes_min) known_views.push_back(candidate->reveal());
  }

  while (i < text.size()) {
    const std::string_view rest = text.substr(i);
    const char c = rest.front();

    if (!known_views.empty()) {
      if (const std::size_t hit = match_known(rest, known_views); hit > 0) {
        emit_mask(i, 0, i + hit);
        continue;
      }
    }
    if (c == '"') {
      if (const match m = match_secret_member(rest); m.length > 0) {
        emit_mask(i, m.kept_bytes, i + m.length);
        continue;
      }
    } else if (c == 's' || c == 'r' || c == 'w') {
      if (const match m = match_secret_key(rest); m.length > 0) {
        emit_mask(i, m.kept_bytes, i + m.length);
        continue;
      }
    }
    if (is_lower(c) && (i == 0 || !is_lower(text[i - 1]))) {
      if (const match m = match_plaid_token(rest); m.length > 0) {
        emit_mask(i, m.kept_bytes, i + m.length);
        continue;
      }
    }
    if (is_digit(c) && (i == 0 || !is_digit(text[i - 1]))) {
      const digit_run run = scan_digit_run(rest);
      BW_ASSERT(run.length > 0);
      const bool standalone = run.length == rest.size() || !is_alnum(rest[run.length]);
      const std::string_view digits = rest.substr(0, run.length);
      if (standalone && run.digits >= card_digits_min && run.digits <= card_digits_max &&
          passes_luhn(digits)) {
        out.append(text.substr(copied_to, i - copied_to));
        append_masked_card(digits, run.digits, out);
        ++redactions;
        i += run.length;
        copied_to = i;
      } else {
        // Skip the whole run so that a suffix of a long number is not taken for a card number.
        i += run.length;
      }
      continue;
    }
    ++i;
  }
  out.append(text.substr(copied_to));
  return redactions;
}

std::string redact(std::string_view text, std::span<const secret* const> known) {
  std::string out;
  out.reserve(text.size());
  redact_into(text, out, known);
  return out;
}

}  // namespace bankworker::crypto
