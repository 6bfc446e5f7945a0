// Recording a job's outcome inside the handler's own transaction (service/job.hpp).

#include "service/job.hpp"

namespace bankworker::service {

void complete_in_or_throw(pqxx::transaction_base& tx, const job_context& context, const queue::job& job,
                          const queue::outcome& result) {
  if (!context.jobs().complete_in(tx, context.owner(), {job.ref, job.attempt, result})) throw lease_lost_error();
}

}  // namespace bankworker::service
