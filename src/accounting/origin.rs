//! Whom a job is billed to: the user who ran proc_box, and the batch scheduler's view of the job
//! (its id, account and partition), read once at start from the environment the job runs in.
//!
//! These are what a chargeback ledger groups by. A value that is unknown is `null`, never a
//! guess: a bill grouped by a made-up account is worse than one with a gap.

use serde::Serialize;

/// The real uid that ran proc_box, and its login name where the user database has one.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Owner {
    pub uid: u32,
    pub user: Option<String>,
}

impl Owner {
    pub fn current() -> Owner {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid).ok().flatten().map(|u| u.name);
        Owner { uid: uid.as_raw(), user }
    }
}

/// The scheduler's record of the job, each part `null` where unknown.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Scheduler {
    pub name: Option<&'static str>,
    pub job_id: Option<String>,
    pub account: Option<String>,
    pub partition: Option<String>,
    pub user: Option<String>,
}

/// Per scheduler: its name, the variable whose presence says it runs the job, and the
/// variables for the job id, account, partition (queue) and user, in that order.
const SCHEDULERS: [(&str, &str, [&[&str]; 4]); 4] = [
    (
        "slurm",
        "SLURM_JOB_ID",
        [&["SLURM_JOB_ID"], &["SLURM_JOB_ACCOUNT"], &["SLURM_JOB_PARTITION"], &["SLURM_JOB_USER"]],
    ),
    ("pbs", "PBS_JOBID", [&["PBS_JOBID"], &["PBS_ACCOUNT"], &["PBS_QUEUE"], &["PBS_O_LOGNAME"]]),
    ("lsf", "LSB_JOBID", [&["LSB_JOBID"], &["LSB_PROJECT_NAME"], &["LSB_QUEUE"], &["LSFUSER"]]),
    // Grid Engine sets JOB_ID, which other tools use too; SGE_ROOT (or SGE_O_LOGNAME) says it
    // is Grid Engine's.
    ("sge", "SGE_O_LOGNAME", [&["JOB_ID"], &["SGE_ACCOUNT"], &["QUEUE"], &["SGE_O_LOGNAME"]]),
];

impl Scheduler {
    /// From proc_box's environment, which is the job's.
    pub fn from_env() -> Scheduler {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// The first scheduler whose marker variable is set; all `null` when none is. A value that
    /// is empty (or, from the environment, not UTF-8) is unknown.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Scheduler {
        let value = |names: &[&str]| names.iter().find_map(|n| get(n).filter(|v| !v.trim().is_empty()));
        for (name, marker, [job_id, account, partition, user]) in SCHEDULERS {
            if value(&[marker]).is_some()
                || (name == "sge" && value(&["SGE_ROOT"]).is_some() && value(job_id).is_some())
            {
                return Scheduler {
                    name: Some(name),
                    job_id: value(job_id),
                    account: value(account),
                    partition: value(partition),
                    user: value(user),
                };
            }
        }
        Scheduler::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Scheduler {
        let pairs: Vec<(String, String)> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Scheduler::from_lookup(|k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn each_scheduler_from_its_variables() {
        let s = env(&[
            ("SLURM_JOB_ID", "42"),
            ("SLURM_JOB_ACCOUNT", "physics"),
            ("SLURM_JOB_PARTITION", "gpu"),
            ("SLURM_JOB_USER", "ada"),
        ]);
        assert_eq!(
            s,
            Scheduler {
                name: Some("slurm"),
                job_id: Some("42".into()),
                account: Some("physics".into()),
                partition: Some("gpu".into()),
                user: Some("ada".into())
            }
        );
        let p = env(&[("PBS_JOBID", "7.server"), ("PBS_QUEUE", "batch"), ("PBS_ACCOUNT", "")]);
        assert_eq!(
            (p.name, p.job_id.as_deref(), p.partition.as_deref()),
            (Some("pbs"), Some("7.server"), Some("batch"))
        );
        assert_eq!(p.account, None, "an empty value is unknown");
        let l = env(&[("LSB_JOBID", "9"), ("LSB_PROJECT_NAME", "chem"), ("LSB_QUEUE", "normal")]);
        assert_eq!((l.name, l.account.as_deref()), (Some("lsf"), Some("chem")));
        let g = env(&[("SGE_ROOT", "/opt/sge"), ("JOB_ID", "5"), ("QUEUE", "all.q")]);
        assert_eq!(
            (g.name, g.job_id.as_deref(), g.partition.as_deref()),
            (Some("sge"), Some("5"), Some("all.q"))
        );
        // JOB_ID alone is not Grid Engine's.
        assert_eq!(env(&[("JOB_ID", "5")]), Scheduler::default());
        assert_eq!(env(&[]), Scheduler::default());
    }

    #[test]
    fn owner_is_the_real_uid() {
        assert_eq!(Owner::current().uid, nix::unistd::getuid().as_raw());
    }
}
