//! A list of differently shaped SVDs ([`SvdListPlan`]), run in waves of problems that fit the
//! workspace side by side, each wave one [`Executor::gesvd_grouped`].

use super::*;
use crate::exec::{GesvdArgs, GesvdCall, SvdRunOptions};

/// One problem of a list of differently shaped SVDs.
#[derive(Clone, Copy, Debug)]
pub struct SvdProblem<'a> {
    pub w: &'a MatDesc,
    pub out: SvdOut<'a>,
}

/// A validated SVD of a list of matrices of different shapes. Every problem is checked — shapes,
/// aliasing across problems — when the plan is built; non-finite values are refused when it
/// runs, before any output is written.
///
/// **Waves.** Consecutive problems whose whole batches fit the workspace side by side (each its
/// own scratch and routine workspace, laid out as [`SvdPlan`] would) form a wave: every problem of
/// the wave is staged, then one [`Executor::gesvd_grouped`] factors them all (concurrently on the
/// CUDA executor's stream pool, one fork/join, then each group's convergence flags read back), then each gets its
/// sign fix and is copied out. A problem whose batch does not fit on its own is streamed in
/// chunks as by [`SvdPlan`], in a wave of its own. So a workspace that holds only the largest
/// single problem's one-matrix share still works, as waves of fewer problems; a larger one runs
/// the list in fewer waves ([`WorkspaceNeed::preferred`]: the whole list as one wave, capped at
/// [`MAX_CHUNK_BYTES`]). Non-convergence is `Error::NotConverged { problem: Some(i), index }`
/// with `i` the problem and `index` the matrix of its batch.
#[derive(Clone, Debug)]
pub struct SvdListPlan {
    problems: Vec<SvdPlan>,
    compute: DType,
    algorithm: SvdAlgorithm,
    diagnostics: bool,
    need: WorkspaceNeed,
}

impl SvdListPlan {
    pub fn new(
        exec: &dyn Executor,
        problems: &[SvdProblem<'_>],
        compute: DType,
        algorithm: SvdAlgorithm,
    ) -> Result<Self> {
        fn cross(e: Error, i: usize, j: usize) -> Error {
            match e {
                Error::Overlap { arg, msg } => {
                    Error::Overlap { arg: format!("problem {i}: {arg}"), msg: format!("{msg} (problem {j})") }
                }
                e => e,
            }
        }
        let mut plans = Vec::with_capacity(problems.len());
        for (i, p) in problems.iter().enumerate() {
            let ctx = |e: Error| match e {
                Error::InvalidShape { arg, msg } => Error::InvalidShape { arg: format!("problem {i}: {arg}"), msg },
                e => e,
            };
            plans.push(SvdPlan::new(exec, p.w, &p.out, compute, algorithm).map_err(ctx)?);
        }
        // Problem i's outputs are written before problem j is read: no output may touch another
        // problem's input or outputs.
        let outs = |p: &SvdProblem<'_>| -> Vec<(&'static str, MatDesc)> {
            [("U", p.out.u), ("S", Some(p.out.s)), ("Vt", p.out.vt)]
                .into_iter()
                .filter_map(|(n, d)| d.map(|d| (n, *d)))
                .collect()
        };
        for (i, pi) in problems.iter().enumerate() {
            for (j, pj) in problems.iter().enumerate().skip(i + 1) {
                let (oi, oj) = (outs(pi), outs(pj));
                let oi: Vec<(&str, &MatDesc)> = oi.iter().map(|(n, d)| (*n, d)).collect();
                let oj: Vec<(&str, &MatDesc)> = oj.iter().map(|(n, d)| (*n, d)).collect();
                let both: Vec<_> = oi.iter().chain(oj.iter()).cloned().collect();
                check_disjoint(&both, &[]).map_err(|e| cross(e, i, j))?;
                check_disjoint(&oi, &[("W", pj.w)]).map_err(|e| cross(e, i, j))?;
                check_disjoint(&oj, &[("W", pi.w)]).map_err(|e| cross(e, j, i))?;
            }
        }
        // A caller's workspace need only hold the largest problem's one-matrix share; the
        // context's own grows to run the list as one wave (every problem's share side by side).
        let (mut min, mut largest, mut sum) = (0usize, 0usize, 0usize);
        for p in &plans {
            min = min.max(p.need.min);
            largest = largest.max(p.need.preferred);
            sum = sum.saturating_add(p.need.preferred);
        }
        let preferred = largest.max(sum.min(MAX_CHUNK_BYTES)).max(min);
        let need = WorkspaceNeed { min, preferred };
        Ok(SvdListPlan { problems: plans, compute, algorithm, diagnostics: false, need })
    }

    /// Read back the routines' diagnostics (see [`SvdRoutine::diagnostics`]).
    pub fn with_diagnostics(mut self, on: bool) -> Self {
        self.diagnostics = on;
        self.problems = self.problems.into_iter().map(|p| p.with_diagnostics(on)).collect();
        self
    }
}

impl Plan for SvdListPlan {
    type Output = ();

    fn synchronizes(&self) -> bool {
        true // the routines' convergence flags are read back to the host.
    }

    fn workspace(&self) -> WorkspaceNeed {
        self.need
    }

    unsafe fn run(&self, exec: &dyn Executor, ws: &mut Ws) -> Result<()> {
        // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
        // contract of the primitives it calls.
        unsafe {
            let (problems, compute, algorithm) = (&self.problems, self.compute, self.algorithm);
            for (i, p) in problems.iter().enumerate() {
                check_finite(exec, &p.w, &format!("problem {i}: W"))?;
            }
            let base = ws.base.unwrap_or(0);
            let in_problem = |e: Error, i: usize| match e {
                Error::NotConverged { index, .. } => Error::NotConverged { problem: Some(i), index },
                e => e,
            };
            let mut i = 0;
            while i < problems.len() {
                // Plan a wave: problems i.. whose whole batches fit side by side.
                let mut wave = Ws::over(base, ws.bytes, ws.device);
                let mut members: Vec<(usize, Layout)> = vec![];
                // One past the last problem of the wave (empty batches join any wave: nothing to do).
                let mut end = i;
                for (j, p) in problems.iter().enumerate().skip(i) {
                    if p.w.batch == 0 {
                        end = j + 1;
                        continue;
                    }
                    let (m, n) = (p.w.rows.max(p.w.cols), p.w.rows.min(p.w.cols));
                    let mut trial = wave.clone();
                    match layout(exec, &mut trial, m, n, p.w.batch, compute, SvdRoutine::full(algorithm)) {
                        Ok(l) => {
                            wave = trial;
                            members.push((j, l));
                            end = j + 1;
                        }
                        Err(Error::WorkspaceTooSmall { .. }) => break,
                        Err(e) => return Err(e),
                    }
                }
                if members.is_empty() && end < problems.len() {
                    // Problem `end`'s batch does not fit whole: streamed in chunks, on its own.
                    let mut sub = Ws::over(base, ws.bytes, ws.device);
                    problems[end].run(exec, &mut sub).map_err(|e| in_problem(e, end))?;
                    i = end + 1;
                    continue;
                }
                if members.is_empty() {
                    break; // only empty batches were left
                }
                let mut calls = Vec::with_capacity(members.len());
                for (j, l) in &members {
                    let args = stage(exec, l, &problems[*j].w, compute)?;
                    calls.push(GesvdCall {
                        args: GesvdArgs { algorithm: algorithm.resolve(args.m, args.n), ..args },
                        work: l.work,
                        work_bytes: l.work_bytes,
                    });
                }
                let options = SvdRunOptions { grouped: true, diagnostics: self.diagnostics };
                exec.gesvd_scheduled(&calls, options).map_err(|e| match e {
                    Error::NotConverged { problem: Some(g), index } => {
                        Error::NotConverged { problem: Some(members.get(g).map_or(g, |(j, _)| *j)), index }
                    }
                    e => e,
                })?;
                for (j, l) in &members {
                    let p = &problems[*j];
                    let n = p.w.rows.min(p.w.cols);
                    let f = finish(exec, l, 0, p.w.batch, n, p.w.rows < p.w.cols, compute)?;
                    write_out(exec, &f, &p.out)?;
                }
                i = end;
            }
            Ok(())
        }
    }
}
