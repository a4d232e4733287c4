//! The handlers of a server: one per id, each registered with its access class and
//! receiving its typed body.

use super::{Call, PeerCred, Reply};
use std::collections::HashMap;
use std::fmt;

use crate::msg::{MsgId, Request, TypedBody, err};

/// Who may make a request: stated when its handler is registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who can open the socket (queries).
    Open,
    /// Only peers the server's [`Policy`](crate::auth::Policy) allows (anything that changes state); others get
    /// `-EACCES`, a log line and an `ipc.refused` event, and the handler is not called.
    Privileged,
}

pub(super) type HandlerFn<C> = Box<dyn FnMut(Request, Call<'_>, &mut C) -> Reply + Send>;

/// The handlers of a server, one per id, fixed before the socket is bound. Every
/// registration states who may make the request ([`Access`]); the server checks it, so no
/// handler does.
pub struct Handlers<C> {
    by_id: HashMap<MsgId, HandlerFn<C>>,
    fallback: Option<HandlerFn<C>>,
}

impl<C> fmt::Debug for Handlers<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&MsgId> = self.by_id.keys().collect();
        ids.sort();
        f.debug_struct("Handlers")
            .field("ids", &ids)
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl<C> Default for Handlers<C> {
    fn default() -> Self {
        Handlers {
            by_id: HashMap::new(),
            fallback: None,
        }
    }
}

/// Admits or refuses the caller by `access`, notes the request, calls `f`.
fn guarded<C>(
    access: Access,
    exempt: impl Fn(&Request, &PeerCred, &C) -> bool + Send + 'static,
    mut f: impl FnMut(Request, Call<'_>, &mut C) -> Reply + Send + 'static,
) -> HandlerFn<C> {
    Box::new(move |request, call, ctx| {
        let peer = call.peer();
        call.gate.note(&request, &peer);
        let admitted = match access {
            Access::Open => true,
            Access::Privileged => call.gate.policy.allows(&peer) || exempt(&request, &peer, ctx),
        };
        if !admitted {
            let gate = call.gate;
            return gate.refuse(call, &peer);
        }
        f(request, call, ctx)
    })
}

/// The typed body of `request`, which triage decoded for `T::ID`.
fn typed<T: TypedBody>(request: Request) -> Result<T, MsgId> {
    T::from_body(request.body).map_err(|other| other.id())
}

/// Calls `f` with the typed body; a body of another id (a bug of the registration) is
/// answered `-EINVAL` with an error log line.
fn typed_handler<C, T: TypedBody>(
    mut f: impl FnMut(T, Call<'_>, &mut C) -> Reply + Send + 'static,
) -> impl FnMut(Request, Call<'_>, &mut C) -> Reply + Send + 'static {
    move |request, call, ctx| match typed::<T>(request) {
        Ok(body) => f(body, call, ctx),
        Err(other) => {
            log::error!("The handler of {} was given a {other} request", T::ID);
            call.err(err::INVALID)
        }
    }
}

impl<C: 'static> Handlers<C> {
    /// No handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles `T`'s id with `f`, for anyone (queries).
    pub fn open<T: TypedBody + 'static>(
        mut self,
        f: impl FnMut(T, Call<'_>, &mut C) -> Reply + Send + 'static,
    ) -> Self {
        let h = guarded(Access::Open, |_, _, _| false, typed_handler(f));
        self.by_id.insert(T::ID, h);
        self
    }

    /// Handles `T`'s id with `f`, for the peers the policy allows.
    pub fn privileged<T: TypedBody + 'static>(
        mut self,
        f: impl FnMut(T, Call<'_>, &mut C) -> Reply + Send + 'static,
    ) -> Self {
        let h = guarded(Access::Privileged, |_, _, _| false, typed_handler(f));
        self.by_id.insert(T::ID, h);
        self
    }

    /// Handles `T`'s id with `f`, for the peers the policy allows and those `exempt`
    /// admits (acrnd: a device model asking for its own VM).
    pub fn privileged_unless<T: TypedBody + 'static>(
        mut self,
        exempt: impl Fn(&T, &PeerCred, &C) -> bool + Send + 'static,
        f: impl FnMut(T, Call<'_>, &mut C) -> Reply + Send + 'static,
    ) -> Self {
        let exempt = move |r: &Request, p: &PeerCred, c: &C| {
            T::from_body(r.body.clone()).is_ok_and(|b| exempt(&b, p, c))
        };
        let h = guarded(Access::Privileged, exempt, typed_handler(f));
        self.by_id.insert(T::ID, h);
        self
    }

    /// Handles `id` with `f` on the whole request (for peers that answer every id alike:
    /// the C-style facade, test peers).
    pub fn on(
        mut self,
        id: MsgId,
        access: Access,
        f: impl FnMut(&Request, Call<'_>, &mut C) -> Reply + Send + 'static,
    ) -> Self {
        let mut f = f;
        let h = guarded(access, |_, _, _| false, move |r, c, ctx| f(&r, c, ctx));
        self.by_id.insert(id, h);
        self
    }

    /// Handles every id of the profile that has no handler of its own.
    pub fn fallback(
        mut self,
        access: Access,
        f: impl FnMut(&Request, Call<'_>, &mut C) -> Reply + Send + 'static,
    ) -> Self {
        let mut f = f;
        self.fallback = Some(guarded(
            access,
            |_, _, _| false,
            move |r, c, ctx| f(&r, c, ctx),
        ));
        self
    }
}

impl<C> Handlers<C> {
    pub(super) fn has(&self, id: MsgId) -> bool {
        self.by_id.contains_key(&id) || self.fallback.is_some()
    }

    pub(super) fn get(&mut self, id: MsgId) -> Option<&mut HandlerFn<C>> {
        match self.by_id.get_mut(&id) {
            Some(h) => Some(h),
            None => self.fallback.as_mut(),
        }
    }
}
