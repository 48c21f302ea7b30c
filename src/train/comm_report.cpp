#include "loco/train/comm_report.hpp"

#include <spdlog/fmt/fmt.h>

namespace loco {

std::string format_bytes(double b) {
  if (b >= 1e12) return fmt::format("{:.2f} TB", b / 1e12);
  if (b >= 1e9) return fmt::format("{:.2f} GB", b / 1e9);
  if (b >= 1e6) return fmt::format("{:.2f} MB", b / 1e6);
  if (b >= 1e3) return fmt::format("{:.2f} kB", b / 1e3);
  return fmt::format("{:.0f} B", b);
}

nlohmann::json comm_report_json(const CommReportInput& in) {
  const CommCounters model = in.model_traffic.total();
  const CommCounters host = in.host_traffic.total();
  const uint64_t ddp32 = ddp_equivalent_bytes(in.num_params, 4, in.workers, in.steps);
  const uint64_t ddp16 = ddp_equivalent_bytes(in.num_params, 2, in.workers, in.steps);
  auto ratio = [&](uint64_t ddp) -> nlohmann::json {
    if (model.sent_bytes == 0) return nullptr;  // nothing sent (one worker): no ratio
    return static_cast<double>(ddp) / static_cast<double>(model.sent_bytes);
  };
  return {{"method", in.method},
          {"workers", in.workers},
          {"replicas", in.replicas},
          {"tokens", in.tokens},
          {"steps", in.steps},
          {"outer_syncs", in.outer_syncs},
          {"parameters", in.num_params},
          {"sent_bytes", model.sent_bytes},
          {"recv_bytes", model.recv_bytes},
          {"comm_seconds", model.seconds},
          {"ddp_fp32_bytes", ddp32},
          {"ddp_bf16_bytes", ddp16},
          {"ratio_vs_ddp_fp32", ratio(ddp32)},
          {"ratio_vs_ddp_bf16", ratio(ddp16)},
          {"control_sent_bytes", host.sent_bytes},
          {"by_kind", in.model_traffic.to_json()},
          {"formulas", CommStats::formulas_json()},
          {"ddp_formula", "steps * 2(K-1)/K * parameters * bytes_per_element, K = workers"},
          {"note",
           "bytes per worker (max over ranks), as a ring algorithm moves them; "
           "control traffic (loss averages, checksums) is counted apart"}};
}

std::string comm_report_table(const nlohmann::json& r) {
  auto ratio = [](const nlohmann::json& v) {
    return v.is_null() ? std::string("-") : fmt::format("{:.1f}x", v.get<double>());
  };
  std::string out;
  out +=
      "communication per worker (ring formulas; DDP = what data-parallel training would "
      "have sent for the same tokens)\n";
  out += fmt::format("{:<8} {:>7} {:>10} {:>11} {:>11} {:>12} {:>12} {:>10} {:>10}\n", "method",
                     "workers", "tokens", "sent", "received", "DDP fp32", "DDP bf16", "vs fp32",
                     "vs bf16");
  out += fmt::format("{:<8} {:>7} {:>10} {:>11} {:>11} {:>12} {:>12} {:>10} {:>10}\n",
                     r["method"].get<std::string>(), r["workers"].get<int>(),
                     r["tokens"].get<long long>(), format_bytes(r["sent_bytes"].get<double>()),
                     format_bytes(r["recv_bytes"].get<double>()),
                     format_bytes(r["ddp_fp32_bytes"].get<double>()),
                     format_bytes(r["ddp_bf16_bytes"].get<double>()), ratio(r["ratio_vs_ddp_fp32"]),
                     ratio(r["ratio_vs_ddp_bf16"]));
  out += fmt::format("{} outer syncs over {} steps; {:.2f} s in collectives; control traffic {}",
                     r["outer_syncs"].get<int>(), r["steps"].get<uint64_t>(),
                     r["comm_seconds"].get<double>(),
                     format_bytes(r["control_sent_bytes"].get<double>()));
  // DiLoCo runs: how the model was split for the syncs, and the largest single sync next to
  // the total (fragments divide the peak bandwidth, not the total).
  if (r.contains("fragments") && r["fragments"].is_object()) {
    const nlohmann::json& f = r["fragments"];
    const int p = f["fragments"].get<int>();
    out += fmt::format("\nouter-sync fragments: {} ({}); peak {} per sync, {} over {} syncs", p,
                       p == 1 ? "the whole model every sync" : "strided layers, staggered syncs",
                       format_bytes(f["peak_sync_sent_bytes"].get<double>()),
                       format_bytes(f["sync_sent_bytes"].get<double>()), f["syncs"].get<int>());
  }
  // DiLoCo runs say whether the outer syncs overlapped the inner steps, and how well.
  if (r.contains("overlap") && r["overlap"].is_object()) {
    const nlohmann::json& o = r["overlap"];
    if (o.value("enabled", false) && o["hidden_fraction"].is_null())
      out += "\nouter-sync overlap on, but no sync overlapped (the run ended first)";
    else if (o.value("enabled", false))
      out += fmt::format(
          "\nouter-sync overlap (tau = {} steps, alpha = {}): {:.1f} % of {:.3f} s of "
          "communication hidden behind inner steps ({:.3f} s blocked, {} overlapped syncs)",
          o["overlap_steps"].get<int>(), o["merge_alpha"].get<double>(),
          100.0 * o["hidden_fraction"].get<double>(), o["comm_seconds"].get<double>(),
          o["blocked_seconds"].get<double>(), o["syncs"].get<int>());
    else
      out += "\nouter-sync overlap off: every outer sync blocks the inner steps";
  }
  // A simulated slow link (distributed.link): the times above include its delays.
  if (r.contains("link") && r["link"].is_object()) {
    const nlohmann::json& l = r["link"];
    out += fmt::format(
        "\n{} on the outer-sync group ({:.2f} s of simulated link time; the ranks "
        "share one machine, the times are not a real network's)",
        l["description"].get<std::string>(), l["simulated_seconds"].get<double>());
  }
  return out;
}

}  // namespace loco
