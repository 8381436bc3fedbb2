/* add_noise.c - scheduler.add_noise (see add_noise.h). */
#include "sample/add_noise.h"

#include <math.h>
#include <stddef.h>

sdxl_status sdxl_sampler_add_noise(const sdxl_sampler *s, int i, const float *x, const float *noise, float *out,
                                   int64_t n, sdxl_error *err) {
    if (!s || !x || !noise || !out || n < 0)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "add_noise: NULL argument or negative size");
    if (i < 0 || i >= sdxl_sampler_steps(s))
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "add_noise: step %d not in [0, %d)", i,
                              sdxl_sampler_steps(s));
    float a, b; /* out = a·x + b·noise */
    switch (sdxl_sampler_get_kind(s)) {
    case SDXL_SAMPLER_EULER:
    case SDXL_SAMPLER_EULER_A:
    case SDXL_SAMPLER_HEUN: {
        const double *sig = sdxl_sampler_sigmas(s);
        if (!sig) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "add_noise: sampler has no sigmas");
        /* torch: original + noise * sigma, all float32 */
        float sigma = (float)sig[i];
        for (int64_t k = 0; k < n; k++) out[k] = x[k] + noise[k] * sigma;
        return SDXL_STATUS_OK;
    }
    case SDXL_SAMPLER_DPMPP_2M:
    case SDXL_SAMPLER_DPMPP_2M_SDE:
    case SDXL_SAMPLER_UNIPC: {
        const double *sig = sdxl_sampler_sigmas(s);
        if (!sig) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "add_noise: sampler has no sigmas");
        float sigma = (float)sig[i];
        a = 1.0f / sqrtf(sigma * sigma + 1.0f);
        b = sigma * a;
        break;
    }
    case SDXL_SAMPLER_DDIM:
    case SDXL_SAMPLER_LCM: {
        const float *ac = sdxl_sampler_alphas_cumprod(s);
        double t = sdxl_sampler_timestep(s, i);
        int ti = (int)t;
        if (!ac || ti < 0 || (double)ti != t || ti >= 1000000)
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "add_noise: timestep %g not a training step", t);
        a = sqrtf(ac[ti]);
        b = sqrtf(1.0f - ac[ti]);
        break;
    }
    default:
        return sdxl_error_set(err, SDXL_STATUS_UNSUPPORTED, "add_noise: not implemented for sampler %s",
                              sdxl_sampler_kind_name(sdxl_sampler_get_kind(s)));
    }
    for (int64_t k = 0; k < n; k++) out[k] = a * x[k] + b * noise[k];
    return SDXL_STATUS_OK;
}
