#include "comm/step_report.h"

namespace pst {

void to_wire(const StepReport& report, wire::StepInfo::Builder out) {
  out.setApplied(report.applied);
  out.setAppliedSteps(report.applied_steps);
  out.setGradNorm(report.grad_norm);
  out.setClipCoef(report.clip_coef);
  out.setLr(report.lr);
  out.setStop(report.stop);
  out.setBatch(report.batch);
  out.setLead(report.lead);
}

StepReport from_wire(wire::StepInfo::Reader in) {
  StepReport r;
  r.applied = in.getApplied();
  r.applied_steps = in.getAppliedSteps();
  r.grad_norm = in.getGradNorm();
  r.clip_coef = in.getClipCoef();
  r.lr = in.getLr();
  r.stop = in.getStop();
  r.batch = in.getBatch();
  r.lead = in.getLead();
  return r;
}

}  // namespace pst
