//! Tenancy (0.8.0, issue 27): who may act on what, and the two mechanisms
//! that keep a role from making SQL run as another role.
//!
//! The rule is PostgreSQL's own: SQL runs as role R only if R, or a role
//! that may `SET ROLE R`, wrote it, chose the definition and started it.
//!
//! - **Owners by oid.** Definitions, triggers, executions, workflow runs,
//!   queued executions and errors record their owner as a `regrole` (an oid
//!   that pg_dump writes as the role's name, so a restore maps owners by
//!   name, and a rename changes nothing). [`may_act_as`] is the one test of
//!   "may act as the owner": the role may `SET ROLE` to it (PostgreSQL 15:
//!   membership; 16 and later: membership with the SET option), and the
//!   owner still exists — a dropped owner's work is nobody's.
//! - **State changes only through the functions, which know their caller.**
//!   A SECURITY DEFINER function cannot tell who called it (inside it,
//!   `current_user` is its owner). So every public function that changes the
//!   engine's or the queue's state is declared in SQL with its own signature
//!   and the C symbol [`act_as`]: it calls `<same name>_as(caller oid, <same
//!   arguments>)` — a SECURITY DEFINER function with a pinned search_path
//!   that nobody may EXECUTE — passing the role in effect at the call
//!   (`GetUserId()`, which SET ROLE and SECURITY DEFINER callers set as
//!   PostgreSQL does). The `_as` function checks what that role may do;
//!   runners hold no INSERT, UPDATE or DELETE on the tables it writes.
//! - **Workers drop privileges before touching user data.** What parses,
//!   casts or evaluates a user's rows or types (the trigger inbox's rows,
//!   cast to the table's row type and turned into jsonb) runs through
//!   [`as_role`]: the owner's identity in a security-restricted operation,
//!   so that no code reached from there can SET ROLE back to the worker's
//!   superuser (the mechanism VACUUM and REINDEX use for the same reason).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::c_void;
use std::rc::Rc;

use pgrx::prelude::*;

use crate::error::Error;

/// May `member` act as `role`: `SET ROLE` to it? A superuser may act on
/// anything; a role that no longer exists is nobody else's (what would run
/// as it fails: the workers check that the role exists and may log in).
pub fn may_act_as(member: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    if role == pg_sys::InvalidOid || member == pg_sys::InvalidOid {
        return false;
    }
    // a superuser acts on everything, a dropped owner's rows included
    if is_superuser(member) {
        return true;
    }
    if !role_exists(role) {
        return false;
    }
    if member == role {
        return true;
    }
    // SAFETY: catalog look-ups (cached per backend by PostgreSQL) with two
    // plain oids, inside a transaction (every caller is SQL-callable or runs
    // in a worker's transaction).
    unsafe {
        #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15"))]
        {
            pg_sys::is_member_of_role(member, role)
        }
        #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15")))]
        {
            // 16 separated "member of" from "may SET ROLE to" (GRANT ... WITH SET)
            pg_sys::member_can_set_role(member, role)
        }
    }
}

/// Does `member` have the privileges of `role` (inherits them, as a GRANT to
/// a group reaches its members)? What a workflow grant to a group needs.
pub fn has_privileges_of(member: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    if role == pg_sys::InvalidOid || member == pg_sys::InvalidOid || !role_exists(role) {
        return false;
    }
    // SAFETY: as in may_act_as.
    member == role || unsafe { pg_sys::has_privs_of_role(member, role) }
}

/// Is there a role with this oid?
pub fn role_exists(role: pg_sys::Oid) -> bool {
    // SAFETY: a syscache existence probe with a plain oid key.
    unsafe {
        pg_sys::SearchSysCacheExists(
            pg_sys::SysCacheIdentifier::AUTHOID as i32,
            pg_sys::Datum::from(role),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
        )
    }
}

/// The role in effect (what `current_user` says outside SECURITY DEFINER
/// functions; inside one, its owner).
pub fn current_role() -> pg_sys::Oid {
    // SAFETY: reads this backend's current user id.
    unsafe { pg_sys::GetUserId() }
}

/// Run `f` with `search_path = pg_catalog, pg_temp` (as a function's SET
/// clause does), restored afterwards; an ERROR's (sub)transaction abort
/// restores it. The native paths that run SQL in another role's session
/// (the table trigger) or as another role (the drain) resolve no name
/// through a path that role chose.
pub fn with_pinned_search_path<R>(f: impl FnOnce() -> R) -> R {
    crate::settings::with_settings(&[(c"search_path", c"pg_catalog, pg_temp")], f)
}

/// Run `f` as `role`, in a security-restricted operation: nothing `f`
/// reaches (a domain's CHECK, a cast function, an output function) can SET
/// ROLE, SET SESSION AUTHORIZATION, or create temporary objects, so it
/// cannot climb back to the worker's own identity. The user and security
/// context are restored afterwards; if `f` raises an ERROR, the abort of the
/// (sub)transaction restores them (as for SECURITY DEFINER functions).
pub fn as_role<R>(role: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    // SAFETY: the switch PostgreSQL makes itself for VACUUM, ANALYZE and
    // REINDEX of another role's table (SetUserIdAndSecContext with
    // SECURITY_RESTRICTED_OPERATION); GetUserIdAndSecContext reads the
    // current state to restore. Errors: see above.
    unsafe {
        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_context = 0;
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(
            role,
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32 | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
        let result = with_pinned_search_path(f);
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
        result
    }
}

/// Run `f` as the owner of the extension's tables (the role that created
/// the extension: what its SECURITY DEFINER functions run as), then switch
/// back. For the few native paths that write the engine's tables on behalf
/// of a role that may not (the table trigger's inbox, the recorder called
/// by a runner).
pub fn as_extension_owner<R>(f: impl FnOnce() -> R) -> R {
    let owner = crate::catalog::relation_owner("automation_workflows", "execution_log").unwrap_or_else(|e| e.raise());
    // SAFETY: as in as_role, without the restriction: the code run is the
    // extension's own (fixed, schema-qualified statements).
    unsafe {
        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_context = 0;
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(owner, saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
        let result = with_pinned_search_path(f);
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
        result
    }
}

/// The `_as` function that a public function declared with [`act_as`]
/// calls: same schema, name + `_as`, an `oid` first and then the public
/// function's argument types; it must be SECURITY DEFINER.
unsafe fn inner_function(outer: pg_sys::Oid) -> pg_sys::Oid {
    // SAFETY (whole function): syscache look-ups of pg_proc rows by oid and
    // by (name, argument types, namespace), read as pg_proc's row struct and
    // released; palloc'd copies in the current memory context.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::PROCOID as i32, pg_sys::Datum::from(outer));
        if tuple.is_null() {
            Error::internal("automation_ext", format!("function {} does not exist", outer.to_u32())).raise();
        }
        let form = &*(pg_sys::GETSTRUCT(tuple) as *const pg_sys::FormData_pg_proc);
        let name = std::ffi::CStr::from_ptr(form.proname.data.as_ptr()).to_string_lossy().into_owned();
        let namespace = form.pronamespace;
        let nargs = form.pronargs as usize;
        let outer_types = form.proargtypes.values.as_slice(nargs).to_vec();
        pg_sys::ReleaseSysCache(tuple);

        let mut types = Vec::with_capacity(nargs + 1);
        types.push(pg_sys::OIDOID);
        types.extend(outer_types);
        let argtypes = pg_sys::buildoidvector(types.as_ptr(), types.len() as i32);
        let inner_name = std::ffi::CString::new(format!("{name}_as")).expect("no NUL in a function name");
        let inner_name = pg_sys::pstrdup(inner_name.as_ptr());
        let found = pg_sys::SearchSysCache3(
            pg_sys::SysCacheIdentifier::PROCNAMEARGSNSP as i32,
            pg_sys::Datum::from(inner_name),
            pg_sys::Datum::from(argtypes),
            pg_sys::Datum::from(namespace),
        );
        if found.is_null() {
            Error::internal("automation_ext", format!("{name}_as, the function {name} calls, does not exist")).raise();
        }
        let inner = &*(pg_sys::GETSTRUCT(found) as *const pg_sys::FormData_pg_proc);
        let (oid, definer) = (inner.oid, inner.prosecdef);
        pg_sys::ReleaseSysCache(found);
        if !definer {
            Error::internal("automation_ext", format!("{name}_as must be SECURITY DEFINER")).raise();
        }
        oid
    }
}

#[no_mangle]
#[doc(hidden)]
pub extern "C" fn pg_finfo_act_as() -> &'static pg_sys::Pg_finfo_record {
    static V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// The C symbol of the public functions that change the engine's and the
/// queue's state (see the module comment): calls `<name>_as(caller, args…)`
/// with the role in effect as `caller`, passing through the call's
/// arguments, collation and result info (so set-returning functions return
/// what the `_as` function returns). An error comes back without the `_as`
/// function's internal CONTEXT lines (its message, detail, hint and
/// SQLSTATE are kept): users see what went wrong, not our statements.
///
/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo` of a
/// function declared `LANGUAGE c AS 'MODULE_PATHNAME', 'act_as'`.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn act_as(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: fcinfo and its flinfo are valid for the call (fmgr's
    // contract). The inner function's FmgrInfo is cached in fn_extra,
    // allocated in fn_mcxt (which lives as long as the outer flinfo). The
    // inner call gets a palloc'd FunctionCallInfo sized for its arguments.
    unsafe {
        let flinfo = (*fcinfo).flinfo;
        if (*flinfo).fn_extra.is_null() {
            let inner = inner_function((*flinfo).fn_oid);
            let cache = pg_sys::MemoryContextAllocZero((*flinfo).fn_mcxt, std::mem::size_of::<pg_sys::FmgrInfo>())
                as *mut pg_sys::FmgrInfo;
            pg_sys::fmgr_info_cxt(inner, cache, (*flinfo).fn_mcxt);
            (*flinfo).fn_extra = cache as *mut c_void;
        }
        let inner = (*flinfo).fn_extra as *mut pg_sys::FmgrInfo;
        let caller = current_role();
        if !is_runner(caller) {
            let name = std::ffi::CStr::from_ptr(pg_sys::GetUserNameFromId(caller, false)).to_string_lossy();
            Error::new(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("permission denied: role {name} may not run workflows"),
            )
            .with_hint(format!(
                "Running workflows needs membership in automation_runner: GRANT automation_runner TO {name};"
            ))
            .raise();
        }
        let nargs = (*fcinfo).nargs as usize;
        let size = std::mem::size_of::<pg_sys::FunctionCallInfoBaseData>()
            + (nargs + 1) * std::mem::size_of::<pg_sys::NullableDatum>();
        let call = pg_sys::palloc0(size) as pg_sys::FunctionCallInfo;
        (*call).flinfo = inner;
        (*call).context = (*fcinfo).context;
        (*call).resultinfo = (*fcinfo).resultinfo;
        (*call).fncollation = (*fcinfo).fncollation;
        (*call).isnull = false;
        (*call).nargs = (nargs + 1) as i16;
        let args = (*call).args.as_mut_slice(nargs + 1);
        args[0] = pg_sys::NullableDatum { value: pg_sys::Datum::from(caller), isnull: false };
        args[1..].copy_from_slice((*fcinfo).args.as_slice(nargs));
        let addr = (*inner).fn_addr.expect("fmgr_info sets fn_addr");
        let result = pg_sys::ffi::pg_guard_ffi_boundary(|| addr(call));
        (*fcinfo).isnull = (*call).isnull;
        result
    }
}

/// Who may do what with one workflow name: its definition's owner and the
/// roles it granted run and work (None: the name has no definition).
struct Acl {
    owner: pg_sys::Oid,
    run: Vec<pg_sys::Oid>,
    work: Vec<pg_sys::Oid>,
}

/// Bumped when a transaction that changed definitions or grants commits:
/// every backend's cache of workflow rights is stale from then on.
static GENERATION: pgrx::PgAtomic<std::sync::atomic::AtomicU64> =
    // SAFETY: a named shared-memory atomic, initialised once while preloading.
    unsafe { pgrx::PgAtomic::new(c"automation_ext workflow rights") };

/// From `_PG_init` while preloading.
pub fn init_shared_memory() {
    pgrx::pg_shmem_init!(GENERATION);
}

thread_local! {
    /// The workflow rights this backend looked up (row-level security asks
    /// for every row: one look-up per name), valid while GENERATION has not
    /// moved (preloaded) or for this transaction (not preloaded).
    static ACLS: RefCell<HashMap<String, Option<Rc<Acl>>>> = RefCell::new(HashMap::new());
    static SEEN_GENERATION: Cell<u64> = const { Cell::new(0) };
    /// This transaction changed definitions or grants.
    static CHANGED: Cell<bool> = const { Cell::new(false) };
    static FORGET_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

fn forget_rights() {
    ACLS.with_borrow_mut(HashMap::clear);
}

/// The shared generation (None without shared memory).
fn generation() -> Option<u64> {
    crate::settings::preloaded().then(|| GENERATION.get().load(std::sync::atomic::Ordering::Acquire))
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_at_transaction_end(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_COMMIT => {
            if CHANGED.replace(false) {
                if crate::settings::preloaded() {
                    GENERATION.get().fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                }
                forget_rights();
            }
            if generation().is_none() {
                forget_rights();
            }
        }
        pg_sys::XactEvent::XACT_EVENT_ABORT => {
            if CHANGED.replace(false) || generation().is_none() {
                forget_rights();
            }
        }
        _ => {}
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_at_subtransaction_abort(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        forget_rights();
    }
}

fn register_forgetting() {
    if !FORGET_REGISTERED.get() {
        // SAFETY: registers plain functions for the life of the backend.
        unsafe {
            pg_sys::RegisterXactCallback(Some(forget_at_transaction_end), std::ptr::null_mut());
            pg_sys::RegisterSubXactCallback(Some(forget_at_subtransaction_abort), std::ptr::null_mut());
        }
        FORGET_REGISTERED.set(true);
    }
}

/// The rights on `name`, from the cache or the tables (read as the
/// extension's owner: the definitions' own row-level security calls this).
fn acl(name: &str) -> Option<Rc<Acl>> {
    if let Some(now) = generation() {
        // (and the definitions table itself: DROP and CREATE EXTENSION in
        // this session made another one)
        // SAFETY: syscache look-ups by name.
        let table = unsafe {
            let nsp = pg_sys::get_namespace_oid(c"automation_workflows".as_ptr(), true);
            pg_sys::get_relname_relid(c"definitions".as_ptr(), nsp)
        };
        let seen = (now << 32) ^ u64::from(table.to_u32());
        if SEEN_GENERATION.replace(seen) != seen {
            forget_rights();
        }
    }
    if let Some(found) = ACLS.with_borrow(|m| m.get(name).cloned()) {
        return found;
    }
    register_forgetting();
    let found = as_extension_owner(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT d.owner::pg_catalog.oid,
                        pg_catalog.array_agg(g.grantee::pg_catalog.oid) FILTER (WHERE g.privilege OPERATOR(pg_catalog.=) 'run'),
                        pg_catalog.array_agg(g.grantee::pg_catalog.oid) FILTER (WHERE g.privilege OPERATOR(pg_catalog.=) 'work')
                   FROM automation_workflows.definitions d
                   LEFT JOIN automation_workflows.workflow_grants g ON g.workflow_name OPERATOR(pg_catalog.=) d.name
                  WHERE d.name OPERATOR(pg_catalog.=) $1
                  GROUP BY d.owner",
                Some(1),
                &[name.into()],
            )?;
            let mut acl = None;
            for row in rows {
                acl = Some(Rc::new(Acl {
                    owner: row.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                    run: row.get::<Vec<pg_sys::Oid>>(2)?.unwrap_or_default(),
                    work: row.get::<Vec<pg_sys::Oid>>(3)?.unwrap_or_default(),
                }));
            }
            Ok::<_, pgrx::spi::SpiError>(acl)
        })
    })
    .unwrap_or_else(|e| Error::internal("could not read the rights on a workflow", e).raise());
    ACLS.with_borrow_mut(|m| m.insert(name.to_owned(), found.clone()));
    found
}

fn is_superuser(role: pg_sys::Oid) -> bool {
    // SAFETY: a syscache look-up by oid.
    unsafe { pg_sys::superuser_arg(role) }
}

/// May `role` use the engine and the queue: a superuser, or a role with the
/// privileges of automation_runner (what every state-changing function
/// asks first).
pub fn is_runner(role: pg_sys::Oid) -> bool {
    if is_superuser(role) {
        return true;
    }
    // SAFETY: a syscache look-up by name; missing_ok.
    let runner = unsafe { pg_sys::get_role_oid(c"automation_runner".as_ptr(), true) };
    has_privileges_of(role, runner)
}

/// Does `role` read everything (a superuser, or a member of automation_monitor)?
fn reads_everything(role: pg_sys::Oid) -> bool {
    if is_superuser(role) {
        return true;
    }
    // SAFETY: a syscache look-up by name; missing_ok.
    let monitor = unsafe { pg_sys::get_role_oid(c"automation_monitor".as_ptr(), true) };
    has_privileges_of(role, monitor)
}

/// May `caller` start `name`? A name without a definition is anybody's.
pub fn may_start(caller: pg_sys::Oid, name: &str) -> bool {
    match acl(name) {
        None => true,
        Some(a) => may_act_as(caller, a.owner) || a.run.iter().any(|&g| has_privileges_of(caller, g)),
    }
}

/// May `caller` work every execution of `name` (its definition's owner, or granted work)?
pub fn may_work(caller: pg_sys::Oid, name: &str) -> bool {
    acl(name).is_some_and(|a| may_act_as(caller, a.owner) || a.work.iter().any(|&g| has_privileges_of(caller, g)))
}

/// May `caller` manage `name` (act as its definition's owner)?
pub fn may_manage(caller: pg_sys::Oid, name: &str) -> bool {
    acl(name).is_some_and(|a| may_act_as(caller, a.owner))
}

#[pg_schema]
mod automation {
    use super::*;

    /// `automation.may_act_as(role regrole) → boolean`: may the role in
    /// effect act as `role` (SET ROLE to it)? False for NULL and for a role
    /// that no longer exists. Row-level security of the extension's tables
    /// uses it.
    #[pg_extern(stable, parallel_safe, sql = false)]
    fn may_act_as(role: Option<pg_sys::Oid>) -> bool {
        role.is_some_and(|r| super::may_act_as(current_role(), r))
    }

    /// `automation.role_may_act_as(member regrole, role regrole) → boolean`.
    #[pg_extern(stable, parallel_safe, sql = false)]
    fn role_may_act_as(member: Option<pg_sys::Oid>, role: Option<pg_sys::Oid>) -> bool {
        matches!((member, role), (Some(m), Some(r)) if super::may_act_as(m, r))
    }

    /// `automation.role_has_privileges_of(member regrole, role regrole) → boolean`.
    #[pg_extern(stable, parallel_safe, sql = false)]
    fn role_has_privileges_of(member: Option<pg_sys::Oid>, role: Option<pg_sys::Oid>) -> bool {
        matches!((member, role), (Some(m), Some(r)) if has_privileges_of(m, r))
    }

    /// `automation.invoker() → regrole`: the role in effect (the default
    /// owner of what a role writes).
    #[pg_extern(stable, parallel_safe, sql = false)]
    fn invoker() -> pg_sys::Oid {
        current_role()
    }

    /// `automation.may_start_workflow(caller oid, workflow_name text) → boolean`.
    #[pg_extern(stable, parallel_restricted, sql = false)]
    fn may_start_workflow(caller: Option<pg_sys::Oid>, workflow_name: Option<&str>) -> bool {
        matches!((caller, workflow_name), (Some(c), Some(n)) if may_start(c, n))
    }

    /// `automation.may_work_workflow(caller oid, workflow_name text) → boolean`.
    #[pg_extern(stable, parallel_restricted, sql = false)]
    fn may_work_workflow(caller: Option<pg_sys::Oid>, workflow_name: Option<&str>) -> bool {
        matches!((caller, workflow_name), (Some(c), Some(n)) if may_work(c, n))
    }

    /// `automation.may_manage_workflow(caller oid, workflow_name text) → boolean`.
    #[pg_extern(stable, parallel_restricted, sql = false)]
    fn may_manage_workflow(caller: Option<pg_sys::Oid>, workflow_name: Option<&str>) -> bool {
        matches!((caller, workflow_name), (Some(c), Some(n)) if may_manage(c, n))
    }

    /// `automation.may_read(owner oid, workflow_name text) → boolean`: the
    /// row-level security of executions, runs and errors.
    #[pg_extern(stable, parallel_restricted, sql = false)]
    fn may_read(owner: Option<pg_sys::Oid>, workflow_name: Option<&str>) -> bool {
        let me = current_role();
        reads_everything(me)
            || owner.is_some_and(|o| super::may_act_as(me, o))
            || workflow_name.is_some_and(|n| may_work(me, n))
    }

    /// `automation.may_read_workflow(workflow_name text) → boolean`: the
    /// row-level security of definitions and grants.
    #[pg_extern(stable, parallel_restricted, sql = false)]
    fn may_read_workflow(workflow_name: Option<&str>) -> bool {
        let me = current_role();
        reads_everything(me)
            || workflow_name.and_then(acl).is_some_and(|a| {
                super::may_act_as(me, a.owner) || a.run.iter().chain(&a.work).any(|&g| has_privileges_of(me, g))
            })
    }

    /// Internal: statement trigger of definitions and workflow_grants: this
    /// backend forgets the rights it looked up (so the rest of the
    /// transaction sees the change).
    #[pg_trigger(sql = false)]
    fn workflow_rights_changed<'a>(
        _trigger: &'a pgrx::PgTrigger<'a>,
    ) -> Result<Option<pgrx::heap_tuple::PgHeapTuple<'a, pgrx::AllocatedByRust>>, pgrx::PgTriggerError> {
        // this transaction sees the change at once; every backend once it commits
        forget_rights();
        register_forgetting();
        CHANGED.set(true);
        Ok(None)
    }
}
