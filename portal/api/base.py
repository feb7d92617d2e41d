"""Base classes for every API endpoint of every app.

`PortalViewSetMixin` filters querysets with `for_user(user, "view")` before any handler runs and
checks the action derived from the HTTP method (or `action_permissions`) on the object, so a
viewset only declares its queryset, serializer and filterset:

    class SlideViewSet(PortalModelViewSet):
        queryset = Slide.objects.select_related("project")
        serializer_class = SlideSerializer
        filterset_class = SlideFilterSet
"""

from __future__ import annotations

from rest_framework import exceptions, mixins, serializers, viewsets

from portal.querysets import action_for_method


class StrictSerializerMixin:
    """Reject fields the serializer does not know instead of silently ignoring them."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            writable = {
                name for name, field in self.fields.items() if not field.read_only
            }
            unknown = sorted(set(data) - writable)
            if unknown:
                raise exceptions.ValidationError(
                    {name: ["Unknown field."] for name in unknown}
                )
        return super().to_internal_value(data)


class StrictSerializer(StrictSerializerMixin, serializers.Serializer):
    pass


class StrictModelSerializer(StrictSerializerMixin, serializers.ModelSerializer):
    pass


class PortalViewSetMixin:
    """Central object permissions for API viewsets."""

    #: Access action per viewset action name, for custom actions (e.g. {"share": "share"}).
    action_permissions: dict[str, str] = {}

    def access_action(self) -> str:
        name = getattr(self, "action", None)
        if name in self.action_permissions:
            return self.action_permissions[name]
        return action_for_method(self.request.method)

    def get_queryset(self):
        return super().get_queryset().for_user(self.request.user, "view")

    def ensure_no_body(self) -> None:
        """For actions that take no input: refuse a body rather than silently ignore it."""
        if self.request.data:
            raise exceptions.ValidationError({"non_field_errors": ["This action takes no request body."]})

    def get_object(self):
        obj = super().get_object()  # 404 for objects the user may not even see
        action = self.access_action()
        if action != "view":
            allowed = type(obj)._default_manager.for_user(self.request.user, action)
            if not allowed.filter(pk=obj.pk).exists():
                raise exceptions.PermissionDenied(f"You may not {action} this object.")
        return obj


class PortalReadOnlyViewSet(PortalViewSetMixin, viewsets.ReadOnlyModelViewSet):
    pass


class PortalModelViewSet(PortalViewSetMixin, viewsets.ModelViewSet):
    pass


class PortalListCreateRetrieveDestroyViewSet(
    PortalViewSetMixin,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    pass
