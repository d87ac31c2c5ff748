"""Ray actors on the tenant's side of the trust boundary: one per tenant, holding its key."""

from patchveil.actors.tenant import (
    AUGMENT_NONCE_STRIDE,
    NAMESPACE,
    TenantActor,
    actor_name,
    call,
    existing_tenant_actor,
    nonce_of,
    sample_id,
    tenant_actor,
)

__all__ = [
    "AUGMENT_NONCE_STRIDE",
    "NAMESPACE",
    "TenantActor",
    "actor_name",
    "call",
    "existing_tenant_actor",
    "nonce_of",
    "sample_id",
    "tenant_actor",
]
