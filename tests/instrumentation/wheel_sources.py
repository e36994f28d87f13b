"""Reads an engine's released wheel as source (a wheel is a zip): does a module define a class,
does the class (or a base it imports) define a method, with which parameters. Used by the seam
contract tests for versions with no CPU build to run here; nothing from the wheel is imported."""

from __future__ import annotations

import ast
import zipfile


class WheelSource:
    def __init__(self, path: str):
        self.zip = zipfile.ZipFile(path)
        self.names = set(self.zip.namelist())
        self._trees: dict[str, ast.Module | None] = {}

    def module(self, dotted: str) -> ast.Module | None:
        if dotted not in self._trees:
            base = dotted.replace(".", "/")
            for name in (f"{base}.py", f"{base}/__init__.py"):
                if name in self.names:
                    self._trees[dotted] = ast.parse(self.zip.read(name))
                    break
            else:
                self._trees[dotted] = None
        return self._trees[dotted]

    def _imported(self, tree: ast.Module, module: str, name: str) -> str | None:
        """The module `name` is imported from in `module` (absolute or relative)."""
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and any(
                (a.asname or a.name) == name for a in node.names
            ):
                if node.level:
                    parts = module.split(".")[: -node.level]
                    return ".".join(parts + ([node.module] if node.module else []))
                return node.module
        return None

    def cls(self, module: str, name: str) -> tuple[str, ast.ClassDef] | None:
        tree = self.module(module)
        if tree is None:
            return None
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                return module, node
        source = self._imported(tree, module, name)
        return self.cls(source, name) if source else None

    def method(self, module: str, cls: str, name: str) -> ast.FunctionDef | None:
        """The method as the class resolves it: its own, else the first base's that has it."""
        found = self.cls(module, cls)
        if found is None:
            return None
        where, node = found
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == name:
                return item
        for base in node.bases:
            if isinstance(base, ast.Name):
                method = self.method(where, base.id, name)
                if method is not None:
                    return method
        return None

    def function(self, module: str, name: str) -> bool:
        """A module-level function defined or imported under `name`."""
        tree = self.module(module)
        if tree is None:
            return False
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                return True
        return self._imported(tree, module, name) is not None


def parameters(fn: ast.FunctionDef) -> list[str]:
    args = fn.args
    return [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
