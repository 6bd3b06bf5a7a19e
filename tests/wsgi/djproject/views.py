import hashlib

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.views.decorators.csrf import csrf_exempt


def healthz(request):
    return HttpResponse("ok")


def json_view(request):
    return JsonResponse({
        "hello": "django",
        "path": request.path,
        "secure": request.is_secure(),
        "host": request.get_host(),
        "q": request.GET.get("q"),
    })


def form(request):
    if request.method == "POST":
        return JsonResponse({"name": request.POST["name"]})
    token = get_token(request)
    return HttpResponse(
        '<form method="post"><input type="hidden" name="csrfmiddlewaretoken" value="%s">'
        '<input name="name"></form>' % token
    )


@csrf_exempt
def upload(request):
    f = request.FILES["file"]
    h = hashlib.sha256()
    size = 0
    for chunk in f.chunks():
        h.update(chunk)
        size += len(chunk)
    return JsonResponse({"name": f.name, "size": size, "sha256": h.hexdigest(),
                         "field": request.POST.get("field")})


def stream(request):
    def rows():
        for i in range(1000):
            yield "row %d\n" % i
    return StreamingHttpResponse(rows(), content_type="text/plain")
