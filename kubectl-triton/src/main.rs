//! `kubectl triton`: see and drive Triton releases (DeployFlows) from kubectl, with the user's
//! own kubeconfig, context and RBAC. The verbs run the API's own operations (the same refusals
//! and messages as the gRPC/REST API); the decisions come from `triton_core`.

mod actions;
mod cluster;
#[cfg(test)]
mod fixtures;
mod get;
mod view;

use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use triton_controller::api::ops::{Interrupt, NonUpdate};
use triton_proto::deployflow as pb;

use crate::actions::{Batching, Wait};
use crate::cluster::{Cluster, Failure, Target};
use crate::get::{ListOutput, Output};

const EXAMPLES: &str = "\
Examples:
  # The tutorial's release, step by step
  kubectl apply -f nginx-deployflow.yaml
  kubectl triton get 12122-sample-10010-df --watch
  kubectl triton next 12122-sample-10010-df --wait

  # Every release in every namespace
  kubectl triton list -A";

/// See and drive Triton releases (DeployFlows).
#[derive(Parser, Debug)]
#[command(name = "kubectl-triton", bin_name = "kubectl triton", version, after_help = EXAMPLES)]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone)]
struct WaitArgs {
    /// Wait until the release reaches the state asked for, printing each change.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits (e.g. 90s, 10m).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

impl WaitArgs {
    fn get(&self) -> Wait {
        Wait {
            wait: self.wait,
            timeout: self.timeout,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show a release as a tree: its batches, their pods, and the CloneSet.
    #[command(after_help = "\
Examples:
  kubectl triton get my-release
  kubectl triton get my-release --watch      # redrawn on every change until it finishes
  kubectl triton get my-release -o json      # the DeployFlow as the API server has it, without managedFields

--watch exits 0 when the release succeeds, 1 when it ends otherwise or is deleted, 130 on Ctrl-C.")]
    Get {
        /// The DeployFlow.
        name: String,
        /// Redraw on every change of the release, its pods, CloneSet or endpoints.
        #[arg(short, long)]
        watch: bool,
        #[arg(short, long, value_enum, default_value = "tree")]
        output: Output,
    },
    /// List releases with their phase, batch and age.
    #[command(after_help = "\
Examples:
  kubectl triton list
  kubectl triton list -A")]
    List {
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: ListOutput,
    },
    /// Move a manual release on to its next stop (Smoked → Baking → Baked → the next batch).
    #[command(after_help = "\
Examples:
  kubectl triton next my-release
  kubectl triton next my-release --wait     # until the release reaches that stop

Refused (exit 1) on a finished release, or while the release is short of its current target.")]
    Next {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Set the release's target: run up to batch N, stopping at stage S.
    #[command(after_help = "\
Examples:
  kubectl triton continue my-release --batches 2
  kubectl triton continue my-release --stage Baked --batches 1 --wait")]
    Continue {
        name: String,
        /// Pending, Smoking, Smoked, Baking or Baked.
        #[arg(long, default_value = "")]
        stage: String,
        /// The batch to run up to.
        #[arg(long, default_value_t = 0)]
        batches: i32,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Pause a release (no new batch starts, no pod is pulled in).
    #[command(after_help = "Examples:\n  kubectl triton pause my-release --wait")]
    Pause {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Resume a paused release (refused while its failing batch still fails).
    #[command(after_help = "\
Examples:
  kubectl triton resume my-release --wait

Without --wait the command returns once the request is written; the controller may still refuse
it (a batch that still fails pauses the release again). --wait reports that refusal (exit 1).")]
    Resume {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Cancel a release (the CloneSet stays as it is; the release ends Canceled).
    #[command(after_help = "Examples:\n  kubectl triton cancel my-release --wait")]
    Cancel {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Restart an application's pods in batches (a new release).
    #[command(after_help = "\
Examples:
  kubectl triton restart 12122-sample-10010 --wait
  kubectl triton restart 12122-sample-10010 --batch-size 50% --interval 10")]
    Restart {
        /// The application (its CloneSet).
        app: String,
        #[command(flatten)]
        batching: Batching,
        /// Restart these pods only.
        #[arg(long = "delete-pod", value_name = "POD")]
        delete_pods: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Scale an application in or out (a new release); a scale in may name the pods to delete.
    #[command(after_help = "\
Examples:
  kubectl triton scale 12122-sample-10010 --replicas 5 --wait
  kubectl triton scale 12122-sample-10010 --replicas 2 --delete-pod 12122-sample-10010-x7k2p")]
    Scale {
        app: String,
        #[arg(long)]
        replicas: i32,
        /// A pod to delete in a scale in (repeat for more).
        #[arg(long = "delete-pod", value_name = "POD")]
        delete_pods: Vec<String>,
        #[command(flatten)]
        batching: Batching,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Roll an application back: to its previous revision, or to a DeployFlow's template.
    #[command(after_help = "\
Examples:
  kubectl triton rollback 12122-sample-10010 --wait
  kubectl triton rollback 12122-sample-10010 --to 12122-sample-10010-df --canary 1 --mode manual")]
    Rollback {
        app: String,
        /// The DeployFlow whose template to roll back to (default: the previous revision).
        #[arg(long, value_name = "DEPLOYFLOW")]
        to: Option<String>,
        /// Pods in a canary batch first.
        #[arg(long, default_value_t = 0)]
        canary: i32,
        #[command(flatten)]
        batching: Batching,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Print a shell completion script.
    #[command(after_help = "\
Examples:
  kubectl triton completion bash > ~/.local/share/bash-completion/completions/kubectl-triton
  kubectl triton completion zsh > \"${fpath[1]}/_kubectl-triton\"
  kubectl triton completion fish > ~/.config/fish/completions/kubectl-triton.fish")]
    Completion {
        shell: clap_complete::Shell,
    },
    /// Print the plugin's version and the cluster's.
    Version {
        /// The plugin's version only (no cluster call).
        #[arg(long)]
        client: bool,
    },
}

/// The DeployFlow or application a command names, checked before it reaches a URL or selector.
fn named(c: &Command) -> Option<(&'static str, &str)> {
    match c {
        Command::Get { name, .. }
        | Command::Next { name, .. }
        | Command::Continue { name, .. }
        | Command::Pause { name, .. }
        | Command::Resume { name, .. }
        | Command::Cancel { name, .. } => Some(("NAME", name)),
        Command::Restart { app, .. } | Command::Scale { app, .. } | Command::Rollback { app, .. } => {
            Some(("APP", app))
        }
        _ => None,
    }
}

async fn run(cli: Cli) -> Result<i32, Failure> {
    if let Some((what, name)) = named(&cli.command) {
        cluster::name(what, name)?;
    }
    if let Command::Rollback { to: Some(to), .. } = &cli.command {
        cluster::name("--to", to)?;
    }
    let connect = || Cluster::connect(&cli.target);
    match cli.command {
        Command::Get {
            name,
            watch,
            output,
        } => get::get(&connect().await?, &name, output, watch).await,
        Command::List {
            all_namespaces,
            output,
        } => get::list(&connect().await?, all_namespaces, output).await,
        Command::Next { name, wait } => {
            actions::next(&connect().await?, &name, None, wait.get()).await?;
            Ok(0)
        }
        Command::Continue {
            name,
            stage,
            batches,
            wait,
        } => {
            let t = pb::TargetState { stage, batches };
            actions::next(&connect().await?, &name, Some(t), wait.get()).await?;
            Ok(0)
        }
        Command::Pause { name, wait } => {
            actions::interrupt(&connect().await?, &name, Interrupt::Pause, wait.get()).await?;
            Ok(0)
        }
        Command::Resume { name, wait } => {
            actions::interrupt(&connect().await?, &name, Interrupt::Resume, wait.get()).await?;
            Ok(0)
        }
        Command::Cancel { name, wait } => {
            actions::interrupt(&connect().await?, &name, Interrupt::Cancel, wait.get()).await?;
            Ok(0)
        }
        Command::Restart {
            app,
            batching,
            delete_pods,
            wait,
        } => {
            let c = connect().await?;
            actions::non_update(&c, &app, NonUpdate::Restart, delete_pods, &batching, wait.get())
                .await?;
            Ok(0)
        }
        Command::Scale {
            app,
            replicas,
            delete_pods,
            batching,
            wait,
        } => {
            let c = connect().await?;
            let action = NonUpdate::Scale(replicas);
            actions::non_update(&c, &app, action, delete_pods, &batching, wait.get()).await?;
            Ok(0)
        }
        Command::Rollback {
            app,
            to,
            canary,
            batching,
            wait,
        } => {
            let c = connect().await?;
            actions::rollback(&c, &app, to, canary, &batching, wait.get()).await?;
            Ok(0)
        }
        Command::Completion { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "kubectl-triton", &mut std::io::stdout());
            Ok(0)
        }
        Command::Version { client } => {
            println!("kubectl-triton {}", env!("CARGO_PKG_VERSION"));
            if client {
                return Ok(0);
            }
            let c = connect().await?;
            let v = c
                .client
                .apiserver_version()
                .await
                .map_err(|e| cluster::from_kube("reading the server version", &e))?;
            println!("Kubernetes {}", v.git_version);
            Ok(0)
        }
    }
}

fn main() {
    // Like kubectl and every Unix tool: a closed pipe (`| head`) ends the program quietly
    // instead of a panic on the next write.
    // SAFETY: called before any thread starts; SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.code
        }
    };
    // Background watches are not awaited: the answer is out.
    rt.shutdown_background();
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn names_are_checked_before_use() {
        let cli = Cli::try_parse_from(["kubectl-triton", "pause", "a,b"]).unwrap();
        let (what, name) = named(&cli.command).unwrap();
        assert!(cluster::name(what, name).is_err());
        let cli = Cli::try_parse_from(["kubectl-triton", "scale", "web", "--replicas", "2"]).unwrap();
        assert_eq!(named(&cli.command), Some(("APP", "web")));
    }

    #[test]
    fn completion_scripts_name_the_plugin_binary() {
        let mut out = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "kubectl-triton",
            &mut out,
        );
        let script = String::from_utf8(out).unwrap();
        assert!(script.contains("kubectl-triton"), "{script}");
        assert!(script.contains("rollback"), "every command: {script}");
    }
}
