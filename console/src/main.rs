//! automation-console: a web console for automation_ext. See docs/console.md.
//!
//! Server-rendered pages (axum, minijinja with HTML auto-escaping) over a
//! pool of PostgreSQL sessions (tokio-postgres, deadpool). Every query runs
//! as the role the console connects as: row-level security and grants
//! decide what it shows and what it may do; the console never elevates.
//! Sessions are read-only (default_transaction_read_only) unless started
//! with --allow-actions.

mod auth;
mod dag;
mod pages;
mod timeline;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "automation-console",
    version,
    about = "A web console for automation_ext: runs, schedules and failures, and acting on them."
)]
struct Cli {
    /// libpq connection string of the database to show (its role decides
    /// what the console sees and may do)
    #[arg(long, env = "AUTOMATION_CONSOLE_DATABASE", default_value = "host=/var/run/postgresql dbname=postgres")]
    database: String,
    /// address to serve on; any address but loopback needs --password-hash
    #[arg(long, env = "AUTOMATION_CONSOLE_LISTEN", default_value = "127.0.0.1:8787")]
    listen: String,
    /// allow actions (re-run, cancel, pause and resume triggers and jobs),
    /// as far as the database role may; without it, sessions are read-only
    #[arg(long, env = "AUTOMATION_CONSOLE_ALLOW_ACTIONS", default_value_t = false)]
    allow_actions: bool,
    /// Argon2 hash of the password (HTTP Basic) required on every request
    /// (`automation-console hash-password` makes one); required to listen
    /// beyond loopback
    #[arg(long, env = "AUTOMATION_CONSOLE_PASSWORD_HASH")]
    password_hash: Option<String>,
    /// how often pages refresh themselves, in seconds (0: never)
    #[arg(long, env = "AUTOMATION_CONSOLE_REFRESH_SECONDS", default_value_t = 5)]
    refresh_seconds: u32,
    /// sessions in the pool
    #[arg(long, env = "AUTOMATION_CONSOLE_POOL_SIZE", default_value_t = 8)]
    pool_size: usize,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read a password from standard input and print its Argon2 hash, for
    /// --password-hash
    HashPassword,
}

pub struct App {
    pub pool: deadpool_postgres::Pool,
    pub templates: minijinja::Environment<'static>,
    pub allow_actions: bool,
    pub password_hash: Option<String>,
    pub csrf: String,
    pub refresh_seconds: u32,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Some(Command::HashPassword) = cli.command {
        let mut password = String::new();
        if std::io::stdin().read_line(&mut password).is_err() || password.trim_end_matches(['\r', '\n']).is_empty() {
            eprintln!("automation-console: give the password on standard input");
            std::process::exit(2);
        }
        match auth::hash_password(password.trim_end_matches(['\r', '\n'])) {
            Ok(h) => println!("{h}"),
            Err(e) => {
                eprintln!("automation-console: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    if let Err(e) = serve(cli).await {
        eprintln!("automation-console: {e}");
        std::process::exit(1);
    }
}

async fn serve(cli: Cli) -> Result<(), String> {
    let addr: SocketAddr = cli
        .listen
        .parse()
        .map_err(|e| format!("--listen {}: not an address such as 127.0.0.1:8787 ({e})", cli.listen))?;
    if let Some(hash) = &cli.password_hash {
        auth::check_hash(hash)?;
    } else if !auth::is_loopback(&addr) {
        return Err(format!(
            "--listen {addr} is reachable from other machines: give --password-hash (automation-console hash-password makes one) and put TLS in front, or listen on 127.0.0.1"
        ));
    }
    let mut config = tokio_postgres::Config::from_str(&cli.database).map_err(|e| format!("--database: {e}"))?;
    config.application_name("automation-console");
    // read-only unless actions are allowed; times in UTC on every page
    let options = if cli.allow_actions {
        "-c TimeZone=UTC".to_owned()
    } else {
        "-c TimeZone=UTC -c default_transaction_read_only=on".to_owned()
    };
    config.options(&options);
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(cli.pool_size.max(1))
        .build()
        .map_err(|e| format!("could not make the connection pool: {e}"))?;
    // fail now, with the reason, rather than on the first page
    {
        let client = pool.get().await.map_err(|e| format!("could not connect to the database: {e}"))?;
        let row = client
            .query_one(
                "SELECT current_user::text, current_database()::text,
                        (SELECT extversion FROM pg_extension WHERE extname = 'automation_ext')",
                &[],
            )
            .await
            .map_err(|e| format!("could not query the database: {e}"))?;
        let version: Option<String> = row.get(2);
        let Some(version) = version else {
            return Err(format!(
                "database {} has no automation_ext (CREATE EXTENSION automation_ext)",
                row.get::<_, String>(1)
            ));
        };
        println!(
            "automation-console: database {} as {} (automation_ext {version}); {}",
            row.get::<_, String>(1),
            row.get::<_, String>(0),
            if cli.allow_actions { "actions allowed" } else { "read-only" }
        );
    }
    let app = Arc::new(App {
        pool,
        templates: pages::templates(),
        allow_actions: cli.allow_actions,
        password_hash: cli.password_hash,
        csrf: auth::random_token(),
        refresh_seconds: cli.refresh_seconds,
    });
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("could not listen on {addr}: {e}"))?;
    println!("automation-console: serving http://{addr}/");
    axum::serve(listener, pages::router(app))
        .with_graceful_shutdown(async {
            let ctrl_c = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let term = async {
                if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    s.recv().await;
                }
            };
            tokio::select! { _ = ctrl_c => {}, _ = term => {} }
        })
        .await
        .map_err(|e| format!("server error: {e}"))
}
