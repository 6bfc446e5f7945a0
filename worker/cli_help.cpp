#include "worker/cli_help.hpp"

#include "service/command.hpp"
#include "service/provider.hpp"

#include <cctype>
#include <cstdio>
#include <string>
#include <vector>

namespace bankworker::worker {

using service::value_options;

namespace {

constexpr std::string_view tenant_line = "  --tenant T         the tenant's id (a uuid)\n";
constexpr std::string_view wait_line =
    "  --wait             wait for the job to finish and print its outcome\n";

// Every command and subcommand, groups before their members, the providers' (service/provider.hpp)
// between these and tail_helps. The one copy of the help text.
constexpr command_help head_helps[] = {
    {"migrate", "[--dry-run|--status]", "apply pending database migrations (as BANKWORKER_MIGRATE_DATABASE_URL's login)",
     "  --dry-run          list what would apply, change nothing\n"
     "  --status           every migration, applied or pending; change nothing\n"},
    {"run", "", "the service: job dispatcher, webhooks; on the admin address /healthz /readyz /metrics and the operator console (/console/)", ""},
    {"tenant", "create|list ...", "tenants", ""},
    {"tenant create", "--name NAME", "create a tenant and print its id", "  --name NAME        a display name\n"},
    {"tenant list", "", "every tenant: id, status, creation date, connections and name", ""},
    {"export", "--tenant T [--format json|csv]", "the tenant's accounts, balances, journal and bank transactions",
     "  --tenant T         the tenant's id (a uuid)\n  --format F         json (default) or csv\n"},
    {"reconcile", "map|list|run ...", "payouts matched to the bank deposits they became", ""},
    {"reconcile map", "--tenant T --plaid-account A [--ledger-account bank] [--tolerance-minor N]",
     "map a synced bank account to a ledger bank account (audited)",
     "  --tenant T            the tenant's id (a uuid)\n"
     "  --plaid-account A     the bank account's id as Plaid reports it\n"
     "  --ledger-account L    the ledger asset account its payouts post to (default bank)\n"
     "  --tolerance-minor N   a deposit off by less than N minor units is short, not unmatched (default 0)\n"},
    {"reconcile list", "[--tenant T] [--status S]", "payouts and their reconciliation status, newest first",
     "  --tenant T         one tenant (default: every tenant)\n"
     "  --status S         pending, matched, short, missing, review, conflict or failed\n"},
    {"reconcile run", "--tenant T", "match the tenant's open payouts now (the worker also does on every change)",
     tenant_line},
    {"keys", "status|rotate|rewrap|destroy ...", "tenant and root keys: see crypto/README.md", ""},
    {"keys status", "[--tenant T]", "each tenant's key versions and what still needs them", tenant_line},
    {"keys rotate", "--tenant T | --root --root-key-file NEW_KEY_FILE",
     "add a new primary tenant key version, or move every tenant key to a new root key",
     "  --tenant T         the tenant whose key rotates\n"
     "  --root             rotate the root key instead\n"
     "  --root-key-file F  the new root key (64 hex characters)\n"},
    {"keys rewrap", "[--tenant T] [--batch-rows N]", "re-wrap data keys under the primary key versions, online",
     "  --tenant T         one tenant (default: every tenant)\n  --batch-rows N     rows per transaction\n"},
    {"keys destroy", "--tenant T --yes-destroy-all-keys", "destroy every key of a tenant: its secrets never open again",
     "  --tenant T               the tenant\n  --yes-destroy-all-keys   the confirmation\n"},
    {"audit", "verify|checkpoint|pubkey ...", "the signed audit chain: see crypto/README.md", ""},
    {"audit verify", "[--tenant T]", "recompute each tenant's audit chain and name the first broken row", tenant_line},
    {"audit checkpoint", "[--tenant T]", "sign a checkpoint of each chain that verifies", tenant_line},
    {"audit pubkey", "", "print the audit signing public key", ""},
};

// After the providers' commands.
constexpr command_help tail_helps[] = {
    {"scope-key", "add|list|retire ...", "the keys the app mints tenant scope tokens with (README)", ""},
    {"scope-key add", "--id K --key-file F", "add a scope key and print its fingerprint",
     "  --id K             the key's id\n  --key-file F       a file holding 64 hex digits\n"},
    {"scope-key list", "", "the scope keys, active and retired (never their material)", ""},
    {"scope-key retire", "--id K", "retire a scope key: tokens under it are refused at once",
     "  --id K             the key's id\n"},
    {"currencies", "add ...", "currencies bankworker.currencies lacks (README: quarantined bank rows)", ""},
    {"currencies add", "CODE --exponent N", "declare a currency; rows quarantined for it apply at once (audited)",
     "  CODE               3 to 8 of A-Z 0-9, as the provider sends it\n"
     "  --exponent N       digits after the decimal point of one unit (0 to 18); never changes\n"},
    {"jobs", "list|show|retry|cancel ...", "the job queue", ""},
    {"jobs list", "[--state S] [--kind K] [--tenant T] [--limit N]", "jobs, newest first",
     "  --state S          available, running, retryable, succeeded, failed or cancelled;\n"
     "                     the metrics' names dead (failed) and retried (retryable) too\n"
     "  --kind K           a job kind (plaid.sync, stripe.post, …)\n"
     "  --tenant T         one tenant's jobs\n  --limit N          at most N (default 100)\n"},
    {"jobs show", "ID", "one job: its state, payload (secrets masked) and every failed attempt's time, worker and error", ""},
    {"jobs retry", "ID | [--state S] [--kind K] [--tenant T] [--limit N] [--dry-run]",
     "revive dead, cancelled or waiting-to-retry jobs with a fresh attempt count: one by id, or every match",
     "  --state S          failed (dead), cancelled or retryable (retried)\n"
     "  --kind K           a job kind\n  --tenant T         one tenant's jobs\n"
     "  --limit N          at most N, oldest first (default 1000)\n"
     "  --dry-run          only name the jobs that would change\n"},
    {"jobs cancel", "ID | [--state S] [--kind K] [--tenant T] [--limit N] [--dry-run]",
     "give up on unfinished jobs: one by id, or every match (a running job loses its lease)",
     "  --state S          available, running or retryable (retried)\n"
     "  --kind K           a job kind\n  --tenant T         one tenant's jobs\n"
     "  --limit N          at most N, oldest first (default 1000)\n"
     "  --dry-run          only name the jobs that would change\n"},
    {"operator", "add|remove|list ...", "the operator console's accounts (on the admin address, /console/)", ""},
    {"operator add", "NAME [--password-file F]",
     "add an operator; without a file, print a random password once",
     "  --password-file F  the password (12..1024 bytes; one trailing newline dropped)\n"},
    {"operator remove", "NAME", "remove an operator and end their sessions", ""},
    {"operator list", "", "the operators (never their password hashes)", ""},
    {"help", "[COMMAND...]", "this text, or one command's", "", false},
    {"man", "", "print the man page (troff) generated from this help text", "", false},
    {"completion", "bash", "print the bash completion script generated from this help text", "", false},
};

constexpr std::string_view global_options =
    "  --json               machine-readable output\n"
    "  --help, -h           help for bankworker or for the command before it\n"
    "  --version            the version\n"
    "  --database-url URL   connect with URL instead of BANKWORKER_DATABASE_URL (for migrate,\n"
    "                       BANKWORKER_MIGRATE_DATABASE_URL). A password on the command line is\n"
    "                       visible to other local users (ps, /proc): prefer the _FILE forms.\n";

constexpr std::string_view environment_text =
    "  BANKWORKER_DATABASE_URL (or _FILE, or the database-url credential): the runtime login\n"
    "  BANKWORKER_MIGRATE_DATABASE_URL (or _FILE, or migrate-database-url): the owner's login, for migrate\n"
    "  BANKWORKER_ROOT_KEY_FILE, BANKWORKER_LOG_LEVEL, …: README.md lists every variable\n";

// The whole table: built once, read only after.
const std::vector<command_help>& helps_table() {
  static const std::vector<command_help> table = [] {
    std::vector<command_help> all(std::begin(head_helps), std::end(head_helps));
    for (const auto& provider : service::all_providers()) {
      for (const service::command_group& group : provider->commands()) {
        all.insert(all.end(), group.help.begin(), group.help.end());
      }
    }
    all.insert(all.end(), std::begin(tail_helps), std::end(tail_helps));
    return all;
  }();
  return table;
}

bool is_member(std::string_view group, std::string_view path) {
  return path.size() > group.size() && path.starts_with(group) && path[group.size()] == ' ';
}

bool is_group(std::string_view path) {
  for (const command_help& help : helps_table()) {
    if (is_member(path, help.path)) return true;
  }
  return false;
}

// Troff text: backslashes escaped, hyphens as \-, characters beyond ASCII as \[uXXXX] (troff
// reads bytes, not UTF-8), and a line never starting with . or '.
std::string troff(std::string_view text) {
  std::string out;
  bool line_start = true;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (line_start && (c == '.' || c == '\'')) out += "\\&";
    line_start = c == '\n';
    if (c == '\\') {
      out += "\\e";
    } else if (c == '-') {
      out += "\\-";
    } else if (c >= 0xE0 && c < 0xF0 && i + 2 < text.size()) {  // the table holds 3-byte characters only
      const unsigned code = ((c & 0x0Fu) << 12) | ((static_cast<unsigned char>(text[i + 1]) & 0x3Fu) << 6) |
                            (static_cast<unsigned char>(text[i + 2]) & 0x3Fu);
      char escaped[16];
      std::snprintf(escaped, sizeof escaped, "\\[u%04X]", code);
      out += escaped;
      i += 2;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

// The --options a command's synopsis names, without their values.
std::vector<std::string_view> options_of(const command_help& help) {
  std::vector<std::string_view> options;
  const std::string_view text = help.synopsis;
  for (std::size_t at = text.find("--"); at != std::string_view::npos; at = text.find("--", at + 2)) {
    std::size_t end = at + 2;
    while (end < text.size() && (std::isalnum(static_cast<unsigned char>(text[end])) || text[end] == '-')) ++end;
    options.push_back(text.substr(at, end - at));
  }
  return options;
}

}  // namespace

std::span<const command_help> command_helps() { return helps_table(); }

const command_help* find_command_help(std::span<const std::string_view> words) {
  const command_help* found = nullptr;
  std::string path;
  for (const std::string_view word : words) {
    if (word.starts_with("-")) break;
    if (!path.empty()) path.push_back(' ');
    path += word;
    const command_help* match = nullptr;
    for (const command_help& help : helps_table()) {
      if (help.path == path) match = &help;
    }
    if (match == nullptr) break;
    found = match;
  }
  return found;
}

void print_usage(std::ostream& out) {
  out << "usage: bankworker [--json] [--database-url URL] <command> [options]\n\ncommands:\n";
  for (const command_help& help : helps_table()) {
    if (is_group(help.path)) continue;
    out << "  " << help.path << (help.synopsis.empty() ? "" : " ") << help.synopsis << "\n      " << help.summary
        << '\n';
  }
  out << "\noptions:\n" << global_options << "\nenvironment:\n" << environment_text
      << "\n'bankworker COMMAND --help' describes one command.\n";
}

void print_command_help(const command_help& help, std::ostream& out) {
  out << "usage: bankworker " << help.path << (help.synopsis.empty() ? "" : " ") << help.synopsis << "\n\n"
      << help.summary << ".\n";
  if (is_group(help.path)) {
    out << "\ncommands:\n";
    for (const command_help& member : helps_table()) {
      if (!is_member(help.path, member.path) || is_group(member.path)) continue;
      out << "  " << member.path << (member.synopsis.empty() ? "" : " ") << member.synopsis << "\n      "
          << member.summary << '\n';
    }
  }
  if (!help.details.empty()) out << "\noptions:\n" << help.details;
  // Commands without a database stop before --database-url, the last global option.
  const std::string_view globals =
      help.database ? global_options : global_options.substr(0, global_options.find("  --database-url"));
  out << "\nglobal options:\n" << globals;
}

void print_man_page(std::ostream& out) {
  out << ".TH BANKWORKER 1 \"\" \"bankworker " << BANKWORKER_VERSION << "\" \"User Commands\"\n"
      << ".SH NAME\nbankworker \\- sync Plaid bank transactions and post Stripe webhooks to a ledger\n"
      << ".SH SYNOPSIS\n.B bankworker\n[\\-\\-json] [\\-\\-database\\-url URL]\n.I command\n[options]\n"
      << ".SH COMMANDS\n";
  for (const command_help& help : helps_table()) {
    if (is_group(help.path)) continue;
    out << ".TP\n.B " << troff(help.path) << (help.synopsis.empty() ? "" : " ") << troff(help.synopsis) << '\n'
        << troff(help.summary) << ".\n";
    if (!help.details.empty()) out << ".RS\n.nf\n" << troff(help.details) << ".fi\n.RE\n";
  }
  out << ".SH OPTIONS\n.nf\n" << troff(global_options) << ".fi\n"
      << ".SH ENVIRONMENT\n.nf\n" << troff(environment_text) << ".fi\n"
      << ".SH EXIT STATUS\n0 done, 1 the command failed, 2 bad usage, 78 bad configuration.\n"
      << ".SH SEE ALSO\nREADME.md and crypto/README.md in the source tree.\n";
}

void print_bash_completion(std::ostream& out) {
  out << "# bash completion for bankworker, generated by 'bankworker completion bash'.\n"
      << "_bankworker() {\n"
      << "  local cur=${COMP_WORDS[COMP_CWORD]} path='' i word\n"
      << "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
      << "    word=${COMP_WORDS[i]}\n"
      << "    case $word in\n"
      << "      ";
  for (const std::string_view option : value_options) out << option << (option == value_options[std::size(value_options) - 1] ? "" : "|");
  out << ") ((i++)) ;;\n"
      << "      -*) ;;\n"
      << "      *) path=\"${path:+$path }$word\" ;;\n"
      << "    esac\n"
      << "  done\n"
      << "  local words='--json --help --database-url'\n"
      << "  case $path in\n";
  out << "    '') words=\"$words --version";
  for (const command_help& help : helps_table()) {
    if (help.path.find(' ') == std::string_view::npos) out << ' ' << help.path;
  }
  out << "\" ;;\n";
  for (const command_help& help : helps_table()) {
    out << "    '" << help.path << "') words=\"$words";
    for (const command_help& member : helps_table()) {
      if (!is_member(help.path, member.path)) continue;
      const std::string_view rest = member.path.substr(help.path.size() + 1);
      if (rest.find(' ') == std::string_view::npos) out << ' ' << rest;
    }
    for (const std::string_view option : options_of(help)) out << ' ' << option;
    out << "\" ;;\n";
  }
  out << "  esac\n"
      << "  COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
      << "}\n"
      << "complete -F _bankworker bankworker\n";
}

}  // namespace bankworker::worker
