// The communication report every run ends with: what each worker put on the wire, next to
// what DDP would have sent for the same tokens (docs/algorithms.md §9).
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "loco/dist/comm_stats.hpp"

namespace loco {

struct CommReportInput {
  std::string method;
  int workers = 1;          // world size
  int replicas = 1;
  long long tokens = 0;     // over all workers
  uint64_t steps = 0;
  uint64_t num_params = 0;
  int outer_syncs = 0;
  CommStats model_traffic;  // this worker's model-sync collectives (max over ranks)
  CommStats host_traffic;   // small host collectives (loss averages, checksums)
};

// {"method", "workers", "tokens", "sent_bytes", "recv_bytes", "ddp_fp32_bytes",
//  "ddp_bf16_bytes", "ratio_vs_ddp_fp32", "ratio_vs_ddp_bf16", "by_kind", "formulas", ...}
nlohmann::json comm_report_json(const CommReportInput& in);
// A fixed-width table of that report for the terminal.
std::string comm_report_table(const nlohmann::json& report);
std::string format_bytes(double bytes);  // "12.3 MB", "1.02 GB" (decimal units)

}  // namespace loco
