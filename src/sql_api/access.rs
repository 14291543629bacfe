//! Who is asking: the role a call runs for, inside SECURITY DEFINER
//! functions too (sql/access.sql).

use pgrx::prelude::*;

/// The role a call runs for: the session's current role (`SET ROLE`, else
/// the login role), which a SECURITY DEFINER function does not change.
/// Jobs and schedules run with this role's rights.
#[pg_extern(stable, parallel_safe, name = "_caller")]
pub fn caller() -> String {
    caller_name()
}

pub(crate) fn caller_name() -> String {
    // SAFETY: reads this backend's role and looks up its name (the role
    // exists: the session runs as it).
    unsafe {
        let oid = pg_sys::GetOuterUserId();
        let p = pg_sys::GetUserNameFromId(oid, false);
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Whether the role a call runs for is a superuser (not the definer of the
/// SECURITY DEFINER function it is in).
pub(crate) fn caller_is_superuser() -> bool {
    // SAFETY: a catalog lookup of this backend's role.
    unsafe { pg_sys::superuser_arg(pg_sys::GetOuterUserId()) }
}
