"""OpenLineage conventions of the project: dataset naming and our custom facets.

OpenLineage imports stay inside functions (and inside the operators' ``get_openlineage_facets_*``
methods), so nothing here costs anything at DAG parse time. See docs/lineage.md.
"""

from __future__ import annotations
