#include "crypto/redact.hpp"

#include <algorithm>
#include <array>
#include <vector>

#include "core/assert.hpp"
#include "core/uuid.hpp"

namespace bankworker::crypto {

namespace {

constexpr std::size_t uuid_text_bytes = 36;
constexpr std::size_t card_digits_min = 13;
constexpr std::size_t card_digits_max = 19;
constexpr std::size_t card_kept_head_digits = 6;
constexpr std::size_t card_kept_tail_digits = 4;

constexpr std::array<std::string_view, 3> plaid_environments = {"sandbox", "development", "production"};
constexpr std::array<std::string_view, 4> stripe_key_prefixes = {"sk_live_", "sk_test_", "rk_live_", "rk_test_"};
constexpr std::string_view webhook_secret_prefix = "whsec_";
// Vault service, batch and recovery tokens.
constexpr std::array<std::string_view, 3> vault_token_prefixes = {"hvs.", "hvb.", "hvr."};
// Beyond the alphanumerics: webhook secrets are base64; Vault tokens are base62 today, and '-' and
// '_' are masked too so that a URL-safe variant does not leave a tail behind.
constexpr std::string_view base64_extra = "+/=";
constexpr std::string_view vault_token_extra = "-_";
// JSON member names whose string value is a secret whatever it looks like, lowercase; a name
// matches in any case and however it is escaped ("\u0053ecret" is "secret"). Vault Transit's
// `plaintext` is the secret itself, base64-encoded.
constexpr std::array<std::string_view, 9> secret_member_names = {
    "secret", "client_secret", "access_token", "public_token", "api_key",
    "password", "webhook_secret", "authorization", "plaintext"};
// Longer decoded member names are not compared (none of the names above is this long).
constexpr std::size_t member_name_bytes_max = 32;
constexpr std::string_view authorization_name = "authorization";
// Bytes that may stand between the groups of a card number ("4242 4242", "4242-4242",
// "4242.4242", "4242 - 4242", …), at most card_separator_bytes_max of them in a row.
constexpr std::string_view card_separators = " -./_\t";
constexpr std::size_t card_separator_bytes_max = 3;

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
bool is_lower(char c) noexcept { return c >= 'a' && c <= 'z'; }
bool is_upper(char c) noexcept { return c >= 'A' && c <= 'Z'; }
bool is_alnum(char c) noexcept { return is_digit(c) || is_lower(c) || is_upper(c); }
char to_lower(char c) noexcept { return is_upper(c) ? static_cast<char>(c - 'A' + 'a') : c; }
bool is_card_separator(char c) noexcept { return card_separators.find(c) != std::string_view::npos; }

bool starts_with_ignoring_case(std::string_view s, std::string_view lowercase_prefix) noexcept {
  if (s.size() < lowercase_prefix.size()) return false;
  for (std::size_t i = 0; i < lowercase_prefix.size(); ++i) {
    if (to_lower(s[i]) != lowercase_prefix[i]) return false;
  }
  return true;
}

// A match: `length` bytes of input of which the first `kept_bytes` are copied and the rest masked.
struct match {
  std::size_t length = 0;
  std::size_t kept_bytes = 0;
};

// -<environment>-<uuid> right after a letter (the end of the token's type, whatever comes before
// it: "xaccess-…", "%22access-…", a type of any length). `s` starts at the dash; the dash and the
// environment are kept and the uuid masked, whatever follows it.
match match_plaid_token(std::string_view s) noexcept {
  for (const std::string_view environment : plaid_environments) {
    const std::size_t uuid_at = 1 + environment.size() + 1;
    if (s.size() < uuid_at + uuid_text_bytes) continue;
    if (s.substr(1, environment.size()) != environment || s[uuid_at - 1] != '-') continue;
    if (!core::uuid::parse(s.substr(uuid_at, uuid_text_bytes))) continue;
    return {uuid_at + uuid_text_bytes, uuid_at};
  }
  return {};
}

// A known prefix followed by at least one character of the key alphabet.
// `extra` lists the key alphabet's characters beyond the alphanumerics.
match match_prefixed_key(std::string_view s, std::string_view prefix, std::string_view extra) noexcept {
  if (!s.starts_with(prefix)) return {};
  std::size_t end = prefix.size();
  while (end < s.size() && (is_alnum(s[end]) || extra.find(s[end]) != std::string_view::npos)) ++end;
  if (end == prefix.size()) return {};
  return {end, prefix.size()};
}

// hvs.<base62>: a Vault token; the prefix stays.
match match_vault_token(std::string_view s) noexcept {
  for (const std::string_view prefix : vault_token_prefixes) {
    if (const match m = match_prefixed_key(s, prefix, vault_token_extra); m.length > 0) return m;
  }
  return {};
}

match match_secret_key(std::string_view s) noexcept {
  if (s.front() == 'h') return match_vault_token(s);
  if (s.front() == 'w') return match_prefixed_key(s, webhook_secret_prefix, base64_extra);
  for (const std::string_view prefix : stripe_key_prefixes) {
    if (const match m = match_prefixed_key(s, prefix, {}); m.length > 0) return m;
  }
  return {};
}

// The JSON string at the start of `s` decoded into `name`, lowercased, as far as the name of a
// secret member needs: escapes of ASCII characters are decoded, anything else ends the match.
// Returns the bytes after the closing quote, or 0 when this is not such a name.
std::size_t decode_member_name(std::string_view s, std::string& name) {
  std::size_t i = 1;
  while (i < s.size() && name.size() < member_name_bytes_max) {
    char c = s[i];
    if (c == '"') return i + 1;
    if (c == '\\') {
      if (i + 1 >= s.size()) return 0;
      c = s[i + 1];
      i += 2;
      if (c == 'u') {
        if (i + 4 > s.size() || s.substr(i, 2) != "00") return 0;
        unsigned value = 0;
        for (const char h : s.substr(i + 2, 2)) {
          const char l = to_lower(h);
          if (!is_digit(l) && !(l >= 'a' && l <= 'f')) return 0;
          value = value * 16 + static_cast<unsigned>(is_digit(l) ? l - '0' : l - 'a' + 10);
        }
        if (value >= 0x80) return 0;
        c = static_cast<char>(value);
        i += 4;
      }
    } else {
      ++i;
    }
    name.push_back(to_lower(c));
  }
  return 0;
}

// "name" <ws> : <ws> "value" where name is a secret member; masks the value between its quotes.
match match_secret_member(std::string_view s) {
  std::string name;
  std::size_t i = decode_member_name(s, name);
  if (i == 0) return {};
  if (std::find(secret_member_names.begin(), secret_member_names.end(), name) == secret_member_names.end()) return {};
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

// Where an Authorization value that starts at `s` ends: at a line break (raw, or escaped as \r or
// \n inside a JSON string) or at the quote that closes the JSON string holding it. A quote right
// after '=' opens a quoted parameter (Digest's response="…") and its closing quote does not end
// the value; an escaped quote (\") never does.
std::size_t authorization_value_end(std::string_view s) noexcept {
  std::size_t j = 0;
  while (j < s.size()) {
    const char c = s[j];
    if (c == '\r' || c == '\n') return j;
    if (c == '\\') {
      if (j + 1 < s.size() && (s[j + 1] == 'r' || s[j + 1] == 'n')) return j;
      j += 2;
      continue;
    }
    if (c == '"') {
      if (j == 0 || s[j - 1] != '=') return j;
      const std::size_t closing = s.find('"', j + 1);
      if (closing == std::string_view::npos) return s.size();
      j = closing + 1;
      continue;
    }
    ++j;
  }
  return std::min(j, s.size());
}

// Authorization <ws> : <ws> [scheme <sp>] value, the name in any case (Proxy-Authorization too):
// the scheme stays, the rest of the value is masked, whatever the scheme (Bearer, Basic, Digest,
// AWS4-HMAC-SHA256, none).
match match_authorization_header(std::string_view s) noexcept {
  if (!starts_with_ignoring_case(s, authorization_name)) return {};
  std::size_t i = authorization_name.size();
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  if (i >= s.size() || s[i] != ':') return {};
  ++i;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  const std::size_t value_at = i;
  const std::size_t end = value_at + authorization_value_end(s.substr(value_at));
  if (end == value_at) return {};
  std::size_t kept_to = value_at;
  while (kept_to < end && s[kept_to] != ' ' && s[kept_to] != '\t') ++kept_to;
  std::size_t secret_at = kept_to;
  while (secret_at < end && (s[secret_at] == ' ' || s[secret_at] == '\t')) ++secret_at;
  if (secret_at == end) return {end, value_at};  // one word: the credential itself
  return {end, secret_at};
}

// A run of digits, with up to card_separator_bytes_max separators allowed between digits.
// Returns the run's length and how many digits it holds.
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
      continue;
    }
    std::size_t gap = 0;
    while (i + gap < s.size() && gap < card_separator_bytes_max && is_card_separator(s[i + gap])) ++gap;
    if (gap == 0 || i + gap >= s.size() || !is_digit(s[i + gap])) break;
    i += gap;
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
    match m;
    if (c == '"') {
      m = match_secret_member(rest);
    } else if (c == 's' || c == 'r' || c == 'w' || c == 'h') {
      m = match_secret_key(rest);
    } else if (c == 'a' || c == 'A') {
      m = match_authorization_header(rest);
    } else if (c == '-' && i > 0 && (is_lower(text[i - 1]) || is_upper(text[i - 1]))) {
      m = match_plaid_token(rest);
    }
    if (m.length > 0) {
      emit_mask(i, m.kept_bytes, i + m.length);
      continue;
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
