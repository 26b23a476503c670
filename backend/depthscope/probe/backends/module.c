/* The Python extension module depthscope.probe.backends._kernels: the kernels of kernels.c
 * bound to Python, and the tables they share with it, exported for kernels.py to check on load.
 *
 * Arguments: tensors as sequences of their data addresses (ints, from Tensor.data_ptr()), sizes
 * as ints, the step's flat output as a writable buffer of float32 (an array('f')), and `where`
 * tables and lengths as buffers of int64 (array('q')). Every sequence and table is checked
 * against the count it must cover before a kernel runs, and every write against the output's
 * length as it happens (kernels.c, PUT): a bad argument raises, it never writes out of bounds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>

#include "kernels.h"

#ifndef DS_SOURCE_SHA
#define DS_SOURCE_SHA "" /* setup.py passes the SHA-256 of kernels.c, kernels.h and this file */
#endif

/* -- arguments --------------------------------------------------------------------------- */
typedef struct {
    Py_buffer view;
    int held;
} Buffer;

static void release(Buffer *b) {
    if (b->held) PyBuffer_Release(&b->view);
    b->held = 0;
}

/* A C-contiguous buffer of `format` (one character: 'f' float32, 'q' int64) holding at least
 * `least` items; writable when asked. */
static int get_buffer(PyObject *obj, Buffer *b, char format, Py_ssize_t least, int writable,
                      const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &b->view, flags) < 0) return -1;
    b->held = 1;
    const char *f = b->view.format ? b->view.format : "B";
    if (f[0] == '@' || f[0] == '=') f++;
    Py_ssize_t size = format == 'f' ? 4 : 8;
    if (f[0] != format || f[1] != '\0' || b->view.itemsize != size) {
        PyErr_Format(PyExc_TypeError, "%s: a buffer of '%c' items, not '%s'", name, format,
                     b->view.format ? b->view.format : "B");
        return -1;
    }
    if (b->view.len / size < least) {
        PyErr_Format(PyExc_ValueError, "%s: %zd items, fewer than the %zd needed", name,
                     b->view.len / size, least);
        return -1;
    }
    return 0;
}

/* The addresses in a sequence of exactly `count` ints, none of them zero, into a new array the
 * caller frees (NULL with an exception set on failure). `obj` may be None when `optional`. */
static void **get_addresses(PyObject *obj, Py_ssize_t count, const char *name, int *failed) {
    *failed = 0;
    if (obj == Py_None) return NULL;
    PyObject *seq = PySequence_Fast(obj, name);
    if (!seq) {
        *failed = 1;
        return NULL;
    }
    if (PySequence_Fast_GET_SIZE(seq) != count) {
        PyErr_Format(PyExc_ValueError, "%s: %zd addresses, expected %zd", name,
                     PySequence_Fast_GET_SIZE(seq), count);
        Py_DECREF(seq);
        *failed = 1;
        return NULL;
    }
    void **out = malloc((size_t)(count > 0 ? count : 1) * sizeof(void *));
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; out && i < count; i++) {
        out[i] = PyLong_AsVoidPtr(items[i]);
        if (out[i] == NULL) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s[%zd]: a null address", name, i);
            free(out);
            out = NULL;
        }
    }
    Py_DECREF(seq);
    if (!out) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        *failed = 1;
    }
    return out;
}

static Py_ssize_t length_of(PyObject *obj, const char *name) {
    Py_ssize_t n = PyObject_Length(obj);
    if (n < 0 && !PyErr_Occurred()) PyErr_Format(PyExc_TypeError, "%s: not a sequence", name);
    return n;
}

static PyObject *finished(int status, const Out *out, const char *kernel) {
    if (status != 0) {
        PyErr_Format(PyExc_IndexError, "%s: slot %lld lies outside the output of %lld floats",
                     kernel, (long long)out->bad, (long long)out->size);
        return NULL;
    }
    Py_RETURN_NONE;
}

static Out out_of(Buffer *b) {
    Out out = {(float *)b->view.buf, (int64_t)(b->view.len / 4), 0};
    return out;
}

/* -- the kernels ---------------------------------------------------------------------------- */
/* norms(x, lengths, copies | None, out, where) */
static PyObject *py_norms(PyObject *self, PyObject *args) {
    PyObject *xs, *ls, *cs, *os, *ws;
    if (!PyArg_ParseTuple(args, "OOOOO:norms", &xs, &ls, &cs, &os, &ws)) return NULL;
    Py_ssize_t count = length_of(xs, "x");
    if (count < 0) return NULL;
    Buffer lengths = {0}, out = {0}, where = {0};
    void **x = NULL, **copies = NULL;
    PyObject *result = NULL;
    int failed = 0;
    if (get_buffer(ls, &lengths, 'q', count, 0, "lengths") || get_buffer(os, &out, 'f', 0, 1, "out")
        || get_buffer(ws, &where, 'q', count, 0, "where"))
        goto done;
    x = get_addresses(xs, count, "x", &failed);
    if (failed) goto done;
    copies = get_addresses(cs, count, "copies", &failed);
    if (failed) goto done;
    Out o = out_of(&out);
    int status = ds_norms((int)count, (const float *const *)x, lengths.view.buf, (float *const *)copies,
                          &o, where.view.buf);
    result = finished(status, &o, "norms");
done:
    free(x);
    free(copies);
    release(&lengths);
    release(&out);
    release(&where);
    return result;
}

/* total_norm(x, lengths, out, at) */
static PyObject *py_total_norm(PyObject *self, PyObject *args) {
    PyObject *xs, *ls, *os;
    long long at;
    if (!PyArg_ParseTuple(args, "OOOL:total_norm", &xs, &ls, &os, &at)) return NULL;
    Py_ssize_t count = length_of(xs, "x");
    if (count < 0) return NULL;
    Buffer lengths = {0}, out = {0};
    void **x = NULL;
    PyObject *result = NULL;
    int failed = 0;
    if (get_buffer(ls, &lengths, 'q', count, 0, "lengths") || get_buffer(os, &out, 'f', 0, 1, "out"))
        goto done;
    x = get_addresses(xs, count, "x", &failed);
    if (failed) goto done;
    Out o = out_of(&out);
    result = finished(ds_total_norm((int)count, (const float *const *)x, lengths.view.buf, &o, at), &o,
                      "total_norm");
done:
    free(x);
    release(&lengths);
    release(&out);
    return result;
}

/* difference_norms(a, b, lengths, out, where) */
static PyObject *py_difference_norms(PyObject *self, PyObject *args) {
    PyObject *as, *bs, *ls, *os, *ws;
    if (!PyArg_ParseTuple(args, "OOOOO:difference_norms", &as, &bs, &ls, &os, &ws)) return NULL;
    Py_ssize_t count = length_of(as, "a");
    if (count < 0) return NULL;
    Buffer lengths = {0}, out = {0}, where = {0};
    void **a = NULL, **b = NULL;
    PyObject *result = NULL;
    int failed = 0;
    if (get_buffer(ls, &lengths, 'q', count, 0, "lengths") || get_buffer(os, &out, 'f', 0, 1, "out")
        || get_buffer(ws, &where, 'q', count, 0, "where"))
        goto done;
    a = get_addresses(as, count, "a", &failed);
    if (failed) goto done;
    b = get_addresses(bs, count, "b", &failed);
    if (failed) goto done;
    Out o = out_of(&out);
    int status = ds_difference_norms((int)count, (const float *const *)a, (const float *const *)b,
                                     lengths.view.buf, &o, where.view.buf);
    result = finished(status, &o, "difference_norms");
done:
    free(a);
    free(b);
    release(&lengths);
    release(&out);
    release(&where);
    return result;
}

/* hidden(z, h | None, u, g | None, batch, width, kind, param, slopes | None, out, where) */
static PyObject *py_hidden(PyObject *self, PyObject *args) {
    PyObject *zs, *hs, *us, *gs, *ss, *os, *ws;
    long long batch, width;
    int kind;
    float param;
    if (!PyArg_ParseTuple(args, "OOOOLLifOOO:hidden", &zs, &hs, &us, &gs, &batch, &width, &kind,
                          &param, &ss, &os, &ws))
        return NULL;
    if (kind < 0 || kind >= HEALTH_KINDS) return PyErr_Format(PyExc_ValueError, "unknown health kind %d", kind);
    if (kind == HEALTH_PRELU && ss == Py_None) return PyErr_Format(PyExc_ValueError, "PReLU needs its slopes");
    if (batch < 1 || width < 1) return PyErr_Format(PyExc_ValueError, "empty layers");
    Py_ssize_t layers = length_of(zs, "z");
    if (layers < 0) return NULL;
    Buffer out = {0}, where = {0};
    void **z = NULL, **h = NULL, **u = NULL, **g = NULL, **slopes = NULL;
    int32_t *per_unit = NULL;
    PyObject *result = NULL;
    int failed = 0;
    if (get_buffer(os, &out, 'f', 0, 1, "out") || get_buffer(ws, &where, 'q', layers * COLUMNS, 0, "where"))
        goto done;
    z = get_addresses(zs, layers, "z", &failed);
    if (failed || (h = get_addresses(hs, layers, "h", &failed), failed)) goto done;
    if ((u = get_addresses(us, layers, "u", &failed), failed)) goto done;
    if ((g = get_addresses(gs, layers, "g", &failed), failed)) goto done;
    if ((slopes = get_addresses(ss, layers, "slopes", &failed), failed)) goto done;
    if (!(per_unit = malloc((size_t)width * sizeof(int32_t)))) {
        PyErr_NoMemory();
        goto done;
    }
    Out o = out_of(&out);
    int status = ds_hidden((int)layers, batch, width, (const float *const *)z, (const float *const *)h,
                           (const float *const *)u, (const float *const *)g, kind, param,
                           (const float *const *)slopes, per_unit, &o, where.view.buf);
    result = finished(status, &o, "hidden");
done:
    free(z);
    free(h);
    free(u);
    free(g);
    free(slopes);
    free(per_unit);
    release(&out);
    release(&where);
    return result;
}

/* readout(logits, batch, classes, targets (0: none), dlogits, out, where) */
static PyObject *py_readout(PyObject *self, PyObject *args) {
    PyObject *lo, *to, *dlo, *os, *ws;
    long long batch, classes;
    if (!PyArg_ParseTuple(args, "OLLOOOO:readout", &lo, &batch, &classes, &to, &dlo, &os, &ws)) return NULL;
    if (batch < 1 || classes < 1) return PyErr_Format(PyExc_ValueError, "an empty readout");
    void *logits = PyLong_AsVoidPtr(lo), *dlogits = PyLong_AsVoidPtr(dlo);
    void *targets = to == Py_None ? NULL : PyLong_AsVoidPtr(to);
    if (PyErr_Occurred()) return NULL;
    if (!logits || !dlogits) return PyErr_Format(PyExc_ValueError, "readout: a null address");
    Buffer out = {0}, where = {0};
    PyObject *result = NULL;
    if (get_buffer(os, &out, 'f', 0, 1, "out") || get_buffer(ws, &where, 'q', READOUT_SLOTS, 0, "where"))
        goto done;
    Out o = out_of(&out);
    result = finished(ds_readout(logits, batch, classes, targets, dlogits, &o, where.view.buf), &o,
                      "readout");
done:
    release(&out);
    release(&where);
    return result;
}

/* histograms(x, lengths, bins, out, where_lo, where_hi, where_counts) */
static PyObject *py_histograms(PyObject *self, PyObject *args) {
    PyObject *xs, *ls, *os, *los, *his, *cos;
    int bins;
    if (!PyArg_ParseTuple(args, "OOiOOOO:histograms", &xs, &ls, &bins, &os, &los, &his, &cos)) return NULL;
    Py_ssize_t count = length_of(xs, "x");
    if (count < 0) return NULL;
    Buffer lengths = {0}, out = {0}, wlo = {0}, whi = {0}, wcounts = {0};
    void **x = NULL;
    PyObject *result = NULL;
    int failed = 0;
    if (get_buffer(ls, &lengths, 'q', count, 0, "lengths") || get_buffer(os, &out, 'f', 0, 1, "out")
        || get_buffer(los, &wlo, 'q', count, 0, "where_lo") || get_buffer(his, &whi, 'q', count, 0, "where_hi")
        || get_buffer(cos, &wcounts, 'q', count, 0, "where_counts"))
        goto done;
    x = get_addresses(xs, count, "x", &failed);
    if (failed) goto done;
    Out o = out_of(&out);
    int status = ds_histograms((int)count, (const float *const *)x, lengths.view.buf, bins, &o,
                               wlo.view.buf, whi.view.buf, wcounts.view.buf);
    result = finished(status, &o, "histograms");
done:
    free(x);
    release(&lengths);
    release(&out);
    release(&wlo);
    release(&whi);
    release(&wcounts);
    return result;
}

/* -- the module, and the tables it exports ----------------------------------------------------- */
static PyMethodDef methods[] = {
    {"norms", py_norms, METH_VARARGS, "Per array, its norm (and a copy of it) into its slot."},
    {"total_norm", py_total_norm, METH_VARARGS, "The norm of all the arrays together into one slot."},
    {"difference_norms", py_difference_norms, METH_VARARGS, "Per pair, the norm of a - b."},
    {"hidden", py_hidden, METH_VARARGS, "Every hidden layer's sums, spreads, counts and dL/dh norm."},
    {"readout", py_readout, METH_VARARGS, "The readout's accuracy, sum, spread and dL/dlogits norm."},
    {"histograms", py_histograms, METH_VARARGS, "Equal-width histograms between each array's min and max."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels", "depthscope's statistics kernels for the CPU (kernels.c).",
    -1, methods,
};

static int add_names(PyObject *m, const char *name, const char *const *names, int count) {
    PyObject *tuple = PyTuple_New(count);
    if (!tuple) return -1;
    for (int i = 0; i < count; i++) {
        PyObject *s = PyUnicode_FromString(names[i]);
        if (!s) {
            Py_DECREF(tuple);
            return -1;
        }
        PyTuple_SET_ITEM(tuple, i, s);
    }
    return PyModule_AddObject(m, name, tuple) < 0 ? (Py_DECREF(tuple), -1) : 0;
}

static int add_health_kinds(PyObject *m) {
    static const char *const names[HEALTH_KINDS] = {"none", "within", "above", "relu",
                                                    "prelu", "gelu", "silu"};
    PyObject *kinds = PyDict_New();
    if (!kinds) return -1;
    for (int i = 0; i < HEALTH_KINDS; i++) {
        PyObject *v = PyLong_FromLong(i);
        if (!v || PyDict_SetItemString(kinds, names[i], v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(kinds);
            return -1;
        }
        Py_DECREF(v);
    }
    return PyModule_AddObject(m, "HEALTH_KINDS", kinds) < 0 ? (Py_DECREF(kinds), -1) : 0;
}

PyMODINIT_FUNC PyInit__kernels(void) {
    static const char *const columns[COLUMNS] = COLUMN_NAMES;
    static const char *const readout[READOUT_SLOTS] = READOUT_NAMES;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (add_names(m, "COLUMNS", columns, COLUMNS) < 0 || add_names(m, "READOUT", readout, READOUT_SLOTS) < 0
        || add_health_kinds(m) < 0 || PyModule_AddObject(m, "TINY", PyFloat_FromDouble(DS_TINY)) < 0
        || PyModule_AddStringConstant(m, "SOURCE_SHA", DS_SOURCE_SHA) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
