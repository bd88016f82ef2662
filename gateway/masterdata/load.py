"""Load the master-data file, refusing it with every problem found, each at file:line.

For: ``load_masterdata`` (schema of ``gateway.masterdata.model`` plus the reference
checks of ``gateway.masterdata.checks``), ``read_masterdata`` (the same, keeping the valid
part, for checks of other files against it) and, re-exported from
``gateway.masterdata.snapshot``, ``to_domain`` that turns loaded master data into the
domain records backflush planning uses.

Must never: return master data with any problem in it, stop at the first problem, or
write to the ledger (loading into it is the CLI's, through the ledger package).
"""

from __future__ import annotations

import os

from gateway.inputfile.validate import Loaded, read_model
from gateway.masterdata.checks import reference_errors
from gateway.masterdata.model import MasterData
from gateway.masterdata.snapshot import DomainMasterData, to_domain

__all__ = ["DomainMasterData", "load_masterdata", "read_masterdata", "to_domain"]


def load_masterdata(path: str | os.PathLike[str]) -> MasterData:
    """The master data in ``path``; raises InputFileError listing every problem."""
    return read_masterdata(path).require()


def read_masterdata(path: str | os.PathLike[str]) -> Loaded[MasterData]:
    """Every problem in the file, and the part of it that is valid."""
    return read_model(path, MasterData, reference_errors)
