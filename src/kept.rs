//! Statements a process parses and plans once and keeps for its lifetime
//! (SPI_keepplan): the audit trigger's insert, run for every audited row
//! change, and the queue recorder's statements, run up to a hundred times a
//! second by a scheduler. The plan cache plans a kept statement again when
//! a relation it reads changes (ALTER, DROP and CREATE EXTENSION, ANALYZE)
//! or the search_path differs, so keeping is safe across all of those.
//!
//! Statements are `&'static str` (a `static`, or text built once per
//! process) and known by their address: looking one up costs a pointer's
//! hash, not its text's (the recorder's are ~2 KB). The same text at two
//! addresses is merely planned twice.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::datum::DatumWithOid;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiError, SpiTupleTable};
use pgrx::PgOid;

thread_local! {
    static KEPT: RefCell<HashMap<(usize, usize), Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
}

/// Run `sql` (parameters of `types`) with `args` through this process's
/// kept plan for it, planning and keeping it on first use.
///
/// The map is not borrowed while the statement runs: a statement may fire a
/// trigger that runs a kept statement of its own (an audited
/// `workflow_executions` while the recorder inserts into it).
pub fn update<'conn>(
    client: &mut SpiClient<'conn>,
    sql: &'static str,
    types: &[PgOid],
    args: &[DatumWithOid],
) -> Result<SpiTupleTable<'conn>, SpiError> {
    let key = (sql.as_ptr() as usize, sql.len());
    let plan = match KEPT.with_borrow(|kept| kept.get(&key).cloned()) {
        Some(plan) => plan,
        None => {
            let plan = Rc::new(client.prepare_mut(sql, types)?.keep());
            KEPT.with_borrow_mut(|kept| kept.insert(key, Rc::clone(&plan)));
            plan
        }
    };
    client.update(&*plan, None, args)
}
