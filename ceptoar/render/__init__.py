"""Rendering alert mail from the Jinja2 templates in `templates/`."""

from ceptoar.render.mail import SEVERITY_LABELS, RenderedAlert, Renderer, default_templates_dir

__all__ = ["SEVERITY_LABELS", "RenderedAlert", "Renderer", "default_templates_dir"]
