"""Ray actors on the tenant's side of the trust boundary: one per tenant, holding its key.

The platform reaches them through `patchveil.pipelines.tenant_handle`, never by importing this.
"""

from patchveil.actors.tenant import TenantActor, source_fingerprint

__all__ = ["TenantActor", "source_fingerprint"]
